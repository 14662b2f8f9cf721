#!/usr/bin/env python3
"""Benchmark files/dispatcher.py through its file contract (DESIGN.md quality bars).

Runs the real daemon as a subprocess on a throwaway root and measures:
- latency record -> request (p50/p95), one record at a time, inotify on;
- a 2000-record burst end to end (first record written -> last request visible, and ->
  ledger committed);
- history sizes 2 000, 20 000 and 100 000 handled records: the first pass over them
  (`once` on a fresh root: time and peak RSS from wait4), then the running daemon on that
  history: start to READY, RSS and peak RSS (VmRSS/VmHWM), CPU per idle pass (SIGUSR1
  triggers the same pass the poll timer runs; CPU from /proc/<pid>/schedstat, ns), bytes
  written per pass (/proc/<pid>/io wchar) and bytes logged per pass, plus the same pass
  timed in-process for a precise median;
- state.json size.

Usage: bench/bench_dispatcher.py [--python PY] [--script PATH] [--quick] [--sizes N,N].
`--script` runs another dispatcher.py (e.g. an older commit's) through the same file
contract, for a side-by-side on the same machine load. Prints a table and writes
bench/results/<timestamp>.json. Goals are printed next to each number.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "files" / "dispatcher.py"
ROUTES = {
    "cutover": {
        "target_kind": "blueprint",
        "target_ref": "dr/postgresql-ha-failover-gcp@v1",
        "target_env": "dr",
        "execution_plane": "runner-local",
    },
    "failback": {
        "target_kind": "module",
        "target_ref": "platform/network/edge-failback@v1",
        "target_env": "prod",
        "execution_plane": "private-overlay",
        "requires_approval": False,
    },
}


# This checkout's package, for the in-process timings and the bench's own helpers.
sys.path.insert(0, str(REPO / "files"))
from hyops_dispatcher.config import load_config  # noqa: E402
from hyops_dispatcher.daemon import start_daemon  # noqa: E402
from hyops_dispatcher.ids import decision_hash  # noqa: E402
from hyops_dispatcher.inotify import Inotify  # noqa: E402
from hyops_dispatcher.jsonlog import JsonLog  # noqa: E402

# --mix: which decision types the bench's records carry, by record number. `awaiting`
# (the default, as before): every record routed to `cutover`, every request awaiting
# approval; `routed`: every record routed, alternately to `cutover` (awaiting approval)
# and `failback` (queued, no approval needed); `half`: every other record unrouted, the
# routed half as in `routed`; `unrouted`: no record has a route.
MIXES = {
    "awaiting": ("cutover",),
    "routed": ("cutover", "failback"),
    "half": ("cutover", "no-route", "failback", "no-route"),
    "unrouted": ("no-route",),
}
MIX = "awaiting"


def decision_type_of(decision_id: str) -> str:
    """The mix's decision type for a record (by the number at the end of its id)."""
    kinds = MIXES[MIX]
    digits = decision_id.rsplit("-", 1)[-1]
    return kinds[int(digits) % len(kinds)] if digits.isdigit() else kinds[0]


def routed_count(count: int, prefix: str = "burst-") -> int:
    return sum(1 for i in range(count) if decision_type_of(f"{prefix}{i:05d}") in ROUTES)


class Setup:
    def __init__(self, top: Path) -> None:
        self.root = top / "root"
        self.records = top / "records"
        (self.root / "config").mkdir(parents=True)
        self.records.mkdir()
        self.config = self.root / "config" / "config.json"
        self.config.write_text(
            json.dumps(
                {
                    "schema_version": 1,
                    "root": str(self.root),
                    "decision_records_dir": str(self.records),
                    "execution_mode": "record-only",
                    "require_approval": True,
                    "poll_seconds": 3600,
                    "heartbeat_seconds": 3600,
                    "settle_seconds": 2,
                    "log_level": "INFO",
                    "routes": ROUTES,
                }
            )
        )
        self.requests = self.root / "state" / "requests"
        self.log = self.root / "logs" / "dispatcher.log"

    def record_bytes(self, decision_id: str, decision_type: str | None = None) -> bytes:
        return json.dumps(
            {
                "decision_id": decision_id,
                "decision_type": decision_type or decision_type_of(decision_id),
                "timestamp_utc": datetime.now(UTC).isoformat(),
                "status": "emitted",
                "rationale": "bench",
                "checks": [{"metric": "edge_up", "value": 0, "ok": False}],
            }
        ).encode()

    def drop(self, decision_id: str, decision_type: str | None = None) -> None:
        """As the decision service does: temp file, rename (no fsync)."""
        tmp = self.records / f".{decision_id}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(self.record_bytes(decision_id, decision_type))
        os.rename(tmp, self.records / f"{decision_id}.json")


class Proc:
    def __init__(
        self, python: str, setup: Setup, command: str = "run", script: Path | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [python, str(script or SCRIPT), "--config", str(setup.config), command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.setup = setup

    def wait_ready(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        state = self.setup.root / "state" / "state.json"
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}")
            try:
                doc = json.loads(state.read_text())
                if doc.get("status") == "running" and doc.get("pid") == self.proc.pid:
                    return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        raise SystemExit("daemon not ready")

    def cpu_ns(self) -> int:
        return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[0])

    def io(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            key, value = line.split(":")
            out[key] = int(value)
        return out

    def rss_kib(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
        return out

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def request_latency_ms(setup: Setup, watcher: Inotify, name: str, timeout: float) -> float:
    """Drop cutover record `name` and wait (inotify on the requests folder) for its
    request to be renamed in: the milliseconds between the two."""
    want = f"-{decision_hash(name)}.json"
    t0 = time.perf_counter()
    setup.drop(name, "cutover")
    while True:
        ready, _, _ = select.select([watcher.fd], [], [], timeout)
        if not ready:
            raise SystemExit(f"no request for {name} within {timeout:g} s")
        names, _ = watcher.read()
        if any(n.endswith(want) and not n.startswith(".") for n in names):
            return (time.perf_counter() - t0) * 1000


def bench_latency(python: str, top: Path, samples: int) -> dict[str, Any]:
    setup = Setup(top / "latency")
    proc = Proc(python, setup)
    proc.wait_ready()
    watcher = Inotify(str(setup.requests))
    latencies = []
    for i in range(samples):
        latencies.append(request_latency_ms(setup, watcher, f"lat-{i:04d}", 5))
        time.sleep(0.01)
    watcher.close()
    proc.stop()
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(pct(latencies, 95), 2),
        "max_ms": round(max(latencies), 2),
    }


def ledger_handled(setup: Setup) -> int:
    """Record files the ledger has committed an outcome for."""
    db = sqlite3.connect(
        f"file:{setup.root / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=30
    )
    try:
        return db.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def count_requests(folder: Path) -> int:
    return sum(1 for n in os.listdir(folder) if n.endswith(".json") and not n.startswith("."))


def burst_once(python: str, top: Path, count: int, script: Path | None = None) -> dict[str, Any]:
    """One burst through a fresh daemon: `count` records written by one writer, time
    until every request of the mix exists and until the ledger has every record."""
    setup = Setup(top)
    want = routed_count(count)
    proc = Proc(python, setup, script=script)
    proc.wait_ready()
    cpu0 = proc.cpu_ns()
    t0 = time.perf_counter()
    for i in range(count):
        setup.drop(f"burst-{i:05d}")
    t_written = time.perf_counter() - t0
    while count_requests(setup.requests) < want:
        time.sleep(0.002)
    t_requests = time.perf_counter() - t0
    while ledger_handled(setup) < count:
        time.sleep(0.002)
    t_ledger = time.perf_counter() - t0
    cpu = (proc.cpu_ns() - cpu0) / 1e9
    rss = proc.rss_kib()
    proc.stop()
    return {
        "writer_s": t_written,
        "all_requests_s": t_requests,
        "ledger_committed_s": t_ledger,
        "daemon_cpu_s": cpu,
        "cpu_per_record_ms": cpu / count * 1e3,
        "rss_kib": rss.get("VmRSS"),
        "peak_rss_kib": rss.get("VmHWM"),
    }


def writer_alone(top: Path, count: int) -> float:
    alone = Setup(top)
    t0 = time.perf_counter()
    for i in range(count):
        alone.drop(f"burst-{i:05d}")
    return time.perf_counter() - t0


def bench_burst(python: str, top: Path, count: int, repeats: int) -> dict[str, Any]:
    """The burst `repeats` times on fresh roots (median reported), plus the same writer
    with no daemon running: on a shared machine the writer alone shows how loaded the
    disk is. Nothing is deleted until the end: mass deletes on a `discard` mount slow the
    journal for a while and would skew the next measurement."""
    runs = [burst_once(python, top / f"burst-{r}", count) for r in range(repeats)]
    result: dict[str, Any] = {
        "records": count,
        "routed": routed_count(count),
        "repeats": repeats,
        "writer_alone_s": round(writer_alone(top / "writer-alone", count), 3),
    }
    for key in runs[0]:
        values = [run[key] for run in runs]
        result[key] = round(statistics.median(values), 4)
        result[f"{key}_all"] = [round(v, 4) for v in values]
    return result


def bench_ab(python: str, top: Path, old: Path, runs: int, count: int) -> dict[str, Any]:
    """The burst through this checkout's daemon and `old`'s, interleaved (new, old, old,
    new, ...) with the writer alone timed between them: medians per build."""
    builds = {"new": SCRIPT, "old": old}
    seen: dict[str, list[dict[str, Any]]] = {"new": [], "old": []}
    alone = []
    for r in range(runs):
        order = ("new", "old") if r % 2 == 0 else ("old", "new")
        for build in order:
            run = burst_once(python, top / f"ab-{build}-{r}", count, builds[build])
            seen[build].append(run)
            print(
                f"  {build} #{r}: requests {run['all_requests_s']:.3f} s, "
                f"CPU {run['daemon_cpu_s']:.3f} s ({run['cpu_per_record_ms']:.3f} ms/record)",
                flush=True,
            )
        alone.append(writer_alone(top / f"ab-alone-{r}", count))
    out: dict[str, Any] = {
        "records": count,
        "routed": routed_count(count),
        "runs": runs,
        "old_script": str(old),
        "writer_alone_s": round(statistics.median(alone), 4),
        "writer_alone_s_all": [round(a, 4) for a in alone],
    }
    for build, rows in seen.items():
        out[build] = {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}
        out[build]["all"] = rows
        out[build]["burst_over_writer"] = round(
            out[build]["all_requests_s"] / max(out["writer_alone_s"], 1e-9), 2
        )
    return out


def bench_grow(
    python: str, top: Path, steps: list[int], script: Path | None = None
) -> dict[str, Any]:
    """One running daemon that handles a growing history itself (no `once` first): records
    are written in steps up to each size; after each step, once the ledger has them all,
    its RSS and peak RSS (VmRSS / VmHWM) and the time the step took."""
    setup = Setup(top)
    proc = Proc(python, setup, script=script)
    proc.wait_ready()
    out: dict[str, Any] = {}
    done = 0
    for size in steps:
        t0 = time.perf_counter()
        cpu0 = proc.cpu_ns()
        for i in range(done, size):
            setup.drop(f"g-{i:06d}")
        t_written = time.perf_counter() - t0
        while ledger_handled(setup) < size:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)  # the pass after the step (state.json, memory handed back)
        rss = proc.rss_kib()
        out[str(size)] = {
            "rss_kib": rss.get("VmRSS"),
            "peak_rss_kib": rss.get("VmHWM"),
            "step_s": round(elapsed, 2),
            "step_writer_s": round(t_written, 2),
            "step_cpu_s": round((proc.cpu_ns() - cpu0) / 1e9, 2),
        }
        print(f"  {size} handled: RSS {rss.get('VmRSS', 0) / 1024:.1f} MiB", flush=True)
        done = size
    proc.stop()
    first, last = out[str(steps[0])], out[str(steps[-1])]
    out["rss_ratio"] = round(last["rss_kib"] / max(first["rss_kib"], 1), 3)
    return out


def scan_probes(python: str, setup: Setup, script: Path, window: float, tag: str) -> dict:
    """A daemon started on a root with a long history runs its full stat scan right
    after READY: records dropped one at a time during `window` seconds after READY, and
    the time until each one's request appears (the latency *during* the scan)."""
    proc = Proc(python, setup, script=script)
    proc.wait_ready()
    watcher = Inotify(str(setup.requests))
    latencies = []
    t_end = time.monotonic() + window
    i = 0
    while time.monotonic() < t_end:
        latencies.append(request_latency_ms(setup, watcher, f"scan-{tag}-{i:04d}", 30))
        i += 1
        time.sleep(0.01)
    watcher.close()
    proc.stop()
    return {
        "probes": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(pct(latencies, 95), 2),
        "max_ms": round(max(latencies), 2),
    }


def longest_block_inprocess(setup: Setup) -> dict[str, Any]:
    """This checkout's loop, in-process: a full stat scan started as the loop starts it,
    then loop iterations (_tick) until it is over; the longest iteration is the longest
    time the loop was blocked by the scan (the prune and approvals resync included)."""
    cfg = load_config(str(setup.config))
    log = JsonLog(None, "INFO", cfg.log_max_bytes, 1, to_stderr=False)
    daemon = start_daemon(cfg, log, use_inotify=True)
    daemon.scan()
    daemon.last_poll = daemon.mono()
    # As at READY in the real loop: state.json (and the approval counts) written before the
    # full scan starts, so the first slice is not charged with the start's own counting.
    daemon.write_state(force=True)
    blocks = []
    t_all = time.perf_counter()
    daemon.start_sweep(full=True, upkeep=True)
    cpu = []
    while daemon.sweep is not None:
        w0, c0 = time.perf_counter(), time.process_time()
        daemon._tick(False)
        blocks.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    total = (time.perf_counter() - t_all) * 1e3
    daemon.stop()
    return {
        "slices": len(blocks),
        "longest_ms": round(max(blocks), 2),
        "longest_cpu_ms": round(max(cpu), 2),
        "median_cpu_ms": round(statistics.median(cpu), 2),
        "median_ms": round(statistics.median(blocks), 2),
        "whole_scan_ms": round(total, 1),
    }


def bench_scan(python: str, top: Path, size: int, old: Path | None, runs: int) -> dict[str, Any]:
    """--scan: the full stat scan at `size` handled records: the longest loop block
    (in-process, this checkout) and the latency of records dropped during the scan, by
    a real daemon of this build and of `old`, interleaved on the same root."""
    setup, first = prepare_handled(python, top, size)
    out: dict[str, Any] = {"handled": size, **first}
    out["inprocess"] = longest_block_inprocess(setup)
    print(f"  longest loop block during the full scan: {out['inprocess']}", flush=True)
    builds = {"new": SCRIPT} if old is None else {"new": SCRIPT, "old": old}
    seen: dict[str, list[dict[str, Any]]] = {b: [] for b in builds}
    for r in range(runs):
        order = list(builds) if r % 2 == 0 else list(builds)[::-1]
        for build in order:
            run = scan_probes(python, setup, builds[build], 3.0, f"{build}{r}")
            seen[build].append(run)
            print(f"  {build} #{r}: latency during the scan {run}", flush=True)
    for build, rows in seen.items():
        out[build] = {
            k: round(statistics.median(r[k] for r in rows), 2) for k in ("p50_ms", "p95_ms")
        }
        out[build]["max_ms"] = max(r["max_ms"] for r in rows)
        out[build]["all"] = rows
    return out


def prepare_handled(python: str, top: Path, count: int) -> tuple[Setup, dict[str, Any]]:
    """`count` records on a fresh root, then the first pass over them (`once`): its wall
    time and peak RSS (ru_maxrss from wait4, KiB)."""
    setup = Setup(top / f"idle-{count}")
    for i in range(count):
        with open(setup.records / f"h-{i:06d}.json", "wb") as fh:
            fh.write(setup.record_bytes(f"h-{i:06d}"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python, str(SCRIPT), "--config", str(setup.config), "once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"once over {count} records exited {proc.returncode}")
    print(f"  first pass over {count} records: {elapsed:.1f} s", flush=True)
    return setup, {"first_pass_s": round(elapsed, 2), "first_pass_peak_rss_kib": usage.ru_maxrss}


def idle_processes(python: str, setups: dict[int, Setup], passes: int) -> dict[int, Any]:
    """The running daemons, one per history size, measured in alternating blocks so a
    change in the machine's other load hits every size alike. SIGUSR1 makes a daemon run
    the poll-timer pass now; CPU comes from /proc/<pid>/schedstat (ns)."""
    procs = {count: Proc(python, setup) for count, setup in setups.items()}
    ready = {count: proc.wait_ready() for count, proc in procs.items()}
    time.sleep(1.5)  # past the racy window of the folder mtime
    for proc in procs.values():
        os.kill(proc.proc.pid, signal.SIGUSR1)  # the first pass lists once
    time.sleep(0.3)
    logs = {c: setups[c].log.stat().st_size for c in procs}
    ios = {c: procs[c].io() for c in procs}
    blocks: dict[int, list[float]] = {c: [] for c in procs}
    per_block = max(1, passes // 20)
    for _ in range(20):
        for count, proc in procs.items():
            cpu_before = proc.cpu_ns()
            for _ in range(per_block):
                os.kill(proc.proc.pid, signal.SIGUSR1)
                time.sleep(0.002)
            time.sleep(0.05)
            blocks[count].append((proc.cpu_ns() - cpu_before) / per_block)
    done = per_block * 20
    out = {}
    for count, proc in procs.items():
        io_after = proc.io()
        out[count] = {
            "process_cpu_per_pass_ms": round(statistics.median(blocks[count]) / 1e6, 4),
            "process_cpu_per_pass_ms_blocks": [round(b / 1e6, 4) for b in blocks[count]],
            "process_wchar_per_pass_bytes": round(
                (io_after["wchar"] - ios[count]["wchar"]) / done, 2
            ),
            "process_write_bytes_total": io_after["write_bytes"] - ios[count]["write_bytes"],
            "log_bytes_per_pass": (setups[count].log.stat().st_size - logs[count]) / done,
            "daemon_ready_s": round(ready[count], 3),
            "state_json_bytes": (setups[count].root / "state" / "state.json").stat().st_size,
            "rss_kib": proc.rss_kib().get("VmRSS"),
            "peak_rss_kib": proc.rss_kib().get("VmHWM"),
        }
        proc.stop()
    return out


def idle_inprocess(setup: Setup, count: int, passes: int) -> dict[str, Any]:
    """The same pass in-process, timed precisely (no signal delivery, no select)."""
    cfg = load_config(str(setup.config))
    log = JsonLog(None, "INFO", cfg.log_max_bytes, 1, to_stderr=False)
    t0 = time.perf_counter()
    daemon = start_daemon(cfg, log, use_inotify=False)
    start_s = time.perf_counter() - t0
    daemon.scan(full=True)
    time.sleep(1.2)
    daemon.scan()
    wall, cpu_in = [], []
    for _ in range(passes):
        w0, c0 = time.perf_counter(), time.process_time()
        daemon.scan()
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu_in.append((time.process_time() - c0) * 1e3)
    full = []
    for _ in range(5):
        w0 = time.perf_counter()
        daemon.scan(full=True)
        full.append((time.perf_counter() - w0) * 1e3)
    listing = []
    for _ in range(5):
        w0 = time.perf_counter()
        daemon.watcher.distrust_listing()
        daemon.scan()
        listing.append((time.perf_counter() - w0) * 1e3)
    daemon.stop()
    return {
        "handled": count,
        "inprocess_pass_ms_median": round(statistics.median(wall), 4),
        "inprocess_pass_cpu_ms_median": round(statistics.median(cpu_in), 4),
        "full_stat_scan_ms_median": round(statistics.median(full), 2),
        "listing_pass_ms_median": round(statistics.median(listing), 2),
        "index_load_s": round(start_s, 3),
    }


def main() -> int:
    global SCRIPT, MIX
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the daemon")
    parser.add_argument("--script", default=str(SCRIPT), help="dispatcher.py to measure")
    parser.add_argument("--quick", action="store_true", help="smaller samples (smoke run)")
    parser.add_argument(
        "--sizes", default="2000,20000,100000", help="history sizes (handled records)"
    )
    parser.add_argument("--skip-latency", action="store_true", help="history sizes only")
    parser.add_argument(
        "--mix", choices=sorted(MIXES), default=MIX, help="routed share of the records"
    )
    parser.add_argument("--tmp", default=None, help="folder for the throwaway roots (/dev/shm)")
    parser.add_argument(
        "--ab", default=None, metavar="OLD_SCRIPT", help="only the burst, this build vs OLD"
    )
    parser.add_argument("--runs", type=int, default=4, help="--ab: bursts per build")
    parser.add_argument(
        "--scan",
        action="store_true",
        help="only the full stat scan at the largest --sizes: longest loop block, latency "
        "during the scan (with --ab OLD: old and new interleaved, --runs each)",
    )
    parser.add_argument(
        "--grow",
        action="store_true",
        help="only RSS of one daemon handling 2k, 20k, 100k records itself (--sizes)",
    )
    args = parser.parse_args()
    SCRIPT = Path(args.script).resolve()
    MIX = args.mix
    # In-process timing imports this checkout's dispatcher: only when that is the one measured.
    inprocess = SCRIPT == REPO / "files" / "dispatcher.py"
    sizes = sorted(int(n) for n in args.sizes.split(","))
    passes = 200 if args.quick else 1000
    top = Path(tempfile.mkdtemp(prefix="hyops-bench-", dir=args.tmp))
    results: dict[str, Any] = {
        "python": subprocess.run(
            [args.python, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "script": str(SCRIPT),
        "when": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "mix": MIX,
        "tmp": str(top),
    }
    if args.scan:
        old = Path(args.ab).resolve() if args.ab else None
        try:
            results["scan"] = bench_scan(args.python, top, sizes[-1], old, args.runs)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        print(json.dumps({k: v for k, v in results["scan"].items() if k != "all"}, indent=1))
        save(results)
        return 0
    if args.grow:
        try:
            results["grow"] = bench_grow(args.python, top, sizes)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        print(json.dumps(results["grow"], indent=1))
        save(results)
        return 0
    if args.ab:
        try:
            results["ab"] = bench_ab(args.python, top, Path(args.ab).resolve(), args.runs, 2000)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        return report_ab(results)
    try:
        if not args.skip_latency:
            print("latency ...", flush=True)
            results["latency"] = bench_latency(args.python, top, 50 if args.quick else 300)
            print("burst ...", flush=True)
            results["burst"] = bench_burst(args.python, top, 2000, 3)
        print(f"history sizes {sizes} ...", flush=True)
        setups: dict[int, Setup] = {}
        first: dict[int, dict[str, Any]] = {}
        for count in sizes:
            setups[count], first[count] = prepare_handled(args.python, top, count)
        measured = idle_processes(args.python, setups, passes)
        for count, setup in setups.items():
            measured[count].update(first[count])
            if inprocess:
                measured[count].update(idle_inprocess(setup, count, passes))
            results[f"idle_{count}"] = {"handled": count, **measured[count]}
    finally:
        shutil.rmtree(top, ignore_errors=True)
    results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    small, big = results[f"idle_{sizes[0]}"], results[f"idle_{sizes[-1]}"]
    results["idle_ratio_process_cpu"] = round(
        big["process_cpu_per_pass_ms"] / max(small["process_cpu_per_pass_ms"], 1e-9), 2
    )
    results["rss_ratio"] = round(big["rss_kib"] / max(small["rss_kib"], 1), 3)
    if inprocess:
        results["idle_ratio_inprocess"] = round(
            big["inprocess_pass_ms_median"] / max(small["inprocess_pass_ms_median"], 1e-9), 2
        )
    label = f"{sizes[0] // 1000}k / {sizes[-1] // 1000}k"
    rows = []
    if "latency" in results:
        rows += [
            (
                "latency p50 / p95 (ms)",
                f"{results['latency']['p50_ms']} / {results['latency']['p95_ms']}",
                "<= 20 / <= 100",
            ),
            ("2000-record burst, all requests (s)", results["burst"]["all_requests_s"], "<= 0.3"),
            (
                "2000-record burst, ledger committed (s)",
                results["burst"]["ledger_committed_s"],
                "<= 0.3",
            ),
            (
                "  writer alone (no daemon) / daemon CPU (s)",
                f"{results['burst']['writer_alone_s']} / {results['burst']['daemon_cpu_s']}",
                "-",
            ),
        ]
    for count in sizes:
        m = results[f"idle_{count}"]
        k = f"{count // 1000}k"
        rows += [
            (
                f"RSS / peak RSS, running, {k} handled (MiB)",
                f"{m['rss_kib'] / 1024:.1f} / {m['peak_rss_kib'] / 1024:.1f}",
                "< 30",
            ),
            (
                f"first pass over {k}: time (s) / peak RSS (MiB)",
                f"{m['first_pass_s']} / {m['first_pass_peak_rss_kib'] / 1024:.1f}",
                "- / < 40",
            ),
            (f"start to READY, {k} handled (s)", m["daemon_ready_s"], "< 1"),
            (f"idle pass CPU, process, {k} (ms)", m["process_cpu_per_pass_ms"], "<= 5"),
        ]
        if inprocess:
            rows += [
                (f"idle pass, in-process median, {k} (ms)", m["inprocess_pass_ms_median"], "<= 5"),
                (
                    f"listing pass at {k} (after a folder change, ms)",
                    m["listing_pass_ms_median"],
                    "-",
                ),
                (
                    f"full stat scan at {k} (hourly safety net, ms)",
                    m["full_stat_scan_ms_median"],
                    "-",
                ),
            ]
    rows += [
        (f"RSS ratio {label}", results["rss_ratio"], "<= 1.25"),
        (f"idle ratio {label} (process CPU)", results["idle_ratio_process_cpu"], "<= 1.5"),
        (
            f"bytes logged / written (wchar) per idle pass, {sizes[-1] // 1000}k",
            f"{big['log_bytes_per_pass']} / {big['process_wchar_per_pass_bytes']}",
            "0 / 0",
        ),
        (f"state.json bytes at {sizes[-1] // 1000}k", big["state_json_bytes"], "<= 8192"),
    ]
    print(
        f"\nhyops decision dispatcher bench ({results['python']}, {results['cpus']} CPUs, "
        f"load {' '.join(results['loadavg_start'])} -> {' '.join(results['loadavg_end'])})"
    )
    for label, value, goal in rows:
        print(f"  {label:<50} {value!s:>18}   goal {goal}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nraw results: {path}")
    return 0


def save(results: dict[str, Any]) -> None:
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nraw results: {path}")


def report_ab(results: dict[str, Any]) -> int:
    ab = results["ab"]
    results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"\nburst A/B ({results['python']}, mix {results['mix']}, {ab['routed']} of "
        f"{ab['records']} routed, {ab['runs']} interleaved runs each, roots in "
        f"{results['tmp']}, load {' '.join(results['loadavg_start'])} -> "
        f"{' '.join(results['loadavg_end'])}); medians, old = {ab['old_script']}"
    )
    rows = [
        ("all requests (s)", "all_requests_s"),
        ("ledger committed (s)", "ledger_committed_s"),
        ("daemon CPU (s)", "daemon_cpu_s"),
        ("CPU per record (ms)", "cpu_per_record_ms"),
        ("burst / writer alone", "burst_over_writer"),
        ("RSS after the burst (KiB)", "rss_kib"),
        ("peak RSS (KiB)", "peak_rss_kib"),
    ]
    print(f"  {'measure':<30} {'new':>10} {'old':>10}")
    for label, key in rows:
        print(f"  {label:<30} {ab['new'][key]!s:>10} {ab['old'][key]!s:>10}")
    print(f"  {'writer alone (s)':<30} {ab['writer_alone_s']!s:>10}")
    save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run ansible-playbook as a subprocess with live progress and the full log kept as evidence.

Why a subprocess and not ansible-runner: see docs/RUNNER.md ("Runner"). Progress comes
from the ``hyops_progress`` callback in this package, which appends JSON lines to a file
the runner tails; ansible's own stdout/stderr go to the evidence folder unfiltered,
under HybridOps' file names.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .errors import HyopsError
from .fsutil import atomic_write_json
from .redact import scrub

PLUGIN_DIR = Path(__file__).resolve().parent / "ansible_plugins" / "callback"
POLL_S = 0.1
EVENTS_FILE = "ansible.events.jsonl"  # this runner's own; HybridOps has no such file
STATUS_WIDTH = 11
STOP_GRACE_S = 5  # after SIGTERM to the group, SIGKILL
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@dataclass
class PlaybookResult:
    returncode: int
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout_log: Path | None = None
    stderr_log: Path | None = None
    log: Path | None = None

    def first_failure(self) -> dict[str, Any] | None:
        for ev in self.events:
            failed = ev.get("status") in ("failed", "unreachable") and not ev.get("ignored")
            if ev.get("event") == "result" and failed:
                return ev
        return None


def find_tool(name: str) -> str | None:
    """The venv's copy first (the interpreter running hyops), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def ansible_env(
    module_dir: Path, progress_file: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)

    def prepend(var: str, value: Path) -> None:
        if value.is_dir():
            env[var] = os.pathsep.join(p for p in (str(value), env.get(var, "")) if p)

    prepend("ANSIBLE_CALLBACK_PLUGINS", PLUGIN_DIR)
    enabled = [c for c in env.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c]
    env["ANSIBLE_CALLBACKS_ENABLED"] = ",".join([*enabled, "hyops_progress"])
    # The module's roles live next to its playbooks, not under playbooks/roles.
    prepend("ANSIBLE_ROLES_PATH", module_dir / "roles")
    # A venv built by this package keeps collections (containers.podman) in <venv>/collections.
    prepend("ANSIBLE_COLLECTIONS_PATH", Path(sys.prefix) / "collections")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "0")
    env["HYOPS_PROGRESS_FILE"] = str(progress_file)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def format_event(ev: dict[str, Any]) -> str | None:
    kind = ev.get("event")
    if kind == "play":
        return f"PLAY {ev.get('name', '')}"
    if kind == "result":
        status = str(ev.get("status", ""))
        if ev.get("ignored"):
            status += "(ignored)"
        line = f"  {status:<{STATUS_WIDTH}} {ev.get('host', ''):<16} {ev.get('task', '')}"
        if ev.get("msg") and not ev.get("ignored"):
            line += f": {ev['msg']}"
        return line
    return None


def run(
    playbook: Path,
    inventory: Path,
    extra_vars: Path,
    cwd: Path,
    evidence: Path,
    module_dir: Path,
    progress: TextIO | None,
    command: str = "apply",
    extra_args: tuple[str, ...] = (),
    timeout_s: float | None = None,
) -> PlaybookResult:
    """One ansible-playbook run with HybridOps' evidence: ``ansible_<command>.stdout.txt``,
    ``.stderr.txt``, ``.result.json`` and both streams teed into ``ansible.log`` between
    ``[hyops] <label> start argv=[...]`` and ``[hyops] <label> end rc=N`` lines."""
    tool = find_tool("ansible-playbook")
    if tool is None:
        raise HyopsError("hyops: ansible-playbook not found; install ansible-core (make venv)")
    label = f"ansible_{command}"
    stdout_log = evidence / f"{label}.stdout.txt"
    stderr_log = evidence / f"{label}.stderr.txt"
    events_file = evidence / EVENTS_FILE
    events_file.touch(mode=0o600)
    argv = [tool, str(playbook), "-i", str(inventory), "-e", f"@{extra_vars}", *extra_args]
    env = ansible_env(module_dir, events_file)
    result = PlaybookResult(returncode=-1, stdout_log=stdout_log, stderr_log=stderr_log)
    result.log = evidence / "ansible.log"
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tee = stack.enter_context(open(result.log, "a", encoding="utf-8", opener=_private))
        out = stack.enter_context(open(stdout_log, "w", encoding="utf-8", opener=_private))
        err = stack.enter_context(open(stderr_log, "w", encoding="utf-8", opener=_private))
        tail = stack.enter_context(open(events_file, encoding="utf-8"))
        tee.write(f"\n[hyops] {label} start argv={argv!r}\n")
        tee.flush()
        # Its own session: a terminal's Ctrl-C reaches hyops alone, and the whole group
        # (workers, modules, what they backgrounded) can be stopped and waited for. As a
        # subreaper, hyops inherits (and so can reap) the group's orphans.
        if _set_subreaper(True):
            stack.callback(_set_subreaper, False)
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        lock = threading.Lock()
        pumps = [
            threading.Thread(target=_pump, args=(src, dst, tee, lock), daemon=True)
            for src, dst in ((proc.stdout, out), (proc.stderr, err))
        ]
        for pump in pumps:
            pump.start()
        pending = ""
        try:
            while True:
                done = proc.poll() is not None
                pending = _drain(tail, pending, result, progress)
                if done:
                    break
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    raise HyopsError(
                        f"ansible-playbook exceeded --timeout {timeout_s:.0f} s and was stopped "
                        f"(open: {result.log})"
                    )
                time.sleep(POLL_S)
        except BaseException:
            # Ctrl-C or a timeout: do not leave ansible running against the host unseen.
            stop_group(proc)
            raise
        finally:
            for pump in pumps:
                pump.join(10)
            with lock:
                tee.write(f"[hyops] {label} end rc={proc.returncode}\n")
            duration_ms = int((time.monotonic() - started) * 1000)
            doc = {"argv": argv, "cwd": str(cwd), "rc": proc.returncode, "duration_ms": duration_ms}
            atomic_write_json(evidence / f"{label}.result.json", doc)
        result.returncode = proc.returncode
    return result


def stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop everything the run started and return only once all of it has ended:
    ansible-playbook's group, and every other descendant of hyops (ansible's workers
    start their own sessions; what a task backgrounded is reparented to hyops, the
    subreaper). SIGTERM, then SIGKILL after STOP_GRACE_S. Ctrl-C and SIGTERM wait until
    this is done (they are delivered after it)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # a session leader's group id is its pid
            for pid in _descendants(os.getpid()):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:  # the leader first: Popen keeps its exit code
                    _reap_children()
                    if not _descendants(os.getpid()):
                        return
                time.sleep(0.02)
        proc.wait()
        _reap_children()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _reap_children() -> None:
    """Reap every child that has ended (orphans of the run, reparented to hyops)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _descendants(root: int) -> list[int]:
    """Live (not zombie) descendants of ``root``, from /proc (empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(name))
    out: list[int] = []
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def _set_subreaper(on: bool) -> bool:
    """Linux: orphans of our descendants become our children (prctl), not init's."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _pump(src: TextIO | None, dst: TextIO, tee: TextIO, lock: threading.Lock) -> None:
    if src is None:
        return
    for line in src:
        dst.write(line)
        dst.flush()
        with lock:
            tee.write(line)
            tee.flush()


def _drain(tail: TextIO, pending: str, result: PlaybookResult, progress: TextIO | None) -> str:
    pending += tail.read()
    *lines, pending = pending.split("\n")
    for line in lines:
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        result.events.append(ev)
        text = format_event(ev)
        if text and progress is not None:
            print(scrub(text), file=progress, flush=True)
    return pending


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)

"""The Prometheus textfile: `render_metrics` (pure) and the writer that puts it on disk
through fsio.

Invariant: the file is replaced whole, never appended; its values are the ones state.json
says.
"""

from __future__ import annotations

from typing import Any, Iterable, List, NamedTuple, Optional, Tuple

from .approvals import ApprovalBook
from .config import Config
from .fsio import write_file_durably
from .ids import iso_ts
from .index import FileIndex
from .report import StateReport, judge_health
from .states import EXECUTION_MODE, OPERATOR_OUTCOMES, OUTCOMES, VERSION

METRIC_PREFIX = "hyops_decision_dispatcher_"


class MetricsSnapshot(NamedTuple):
    """Every value of the metrics file. `last_pass` and `oldest_awaiting_s` change with
    time alone: they never cause a rewrite between heartbeats (MetricsReport.changed)."""

    version: str
    watcher: str
    healthy: bool
    heartbeat_seconds: float
    records_total: Tuple[Tuple[str, int], ...]  # (outcome, count), every outcome
    requests_total: Tuple[Tuple[str, int], ...]  # (route, count), every route
    awaiting: Tuple[Tuple[str, int], ...]
    expired: Tuple[Tuple[str, int], ...]
    approvals_dir_readable: bool
    awaiting_operator: Tuple[Tuple[str, int], ...]  # (outcome, files), OPERATOR_OUTCOMES
    reload_ok: bool
    coalesced_after_approval: int = 0
    last_pass: float = 0.0
    oldest_awaiting_s: float = 0.0

    def timeless(self) -> MetricsSnapshot:
        return self._replace(last_pass=0.0, oldest_awaiting_s=0.0)


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 3))


def render_metrics(snap: MetricsSnapshot) -> str:
    """The Prometheus text format (node_exporter textfile collector): HELP and TYPE for
    every family, no sample timestamps, label values escaped."""
    lines: List[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[Tuple[str, Any]]) -> None:
        full = METRIC_PREFIX + name
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            lines.append(f"{full}{labels} {_sample_value(value)}")

    def by(label: str, pairs: Iterable[Tuple[str, int]]) -> List[Tuple[str, int]]:
        return [(f'{{{label}="{_label_value(k)}"}}', v) for k, v in pairs]

    info = (
        f'{{execution_mode="{EXECUTION_MODE}",version="{_label_value(snap.version)}",'
        f'watcher="{_label_value(snap.watcher)}"}}'
    )
    family(
        "info",
        "gauge",
        "The running dispatcher: version, execution mode and how it watches the records "
        "folder; always 1.",
        [(info, 1)],
    )
    family(
        "healthy",
        "gauge",
        "1 when healthy by the rule of `dispatcher.py status` (running, status running, "
        "fresh state), else 0.",
        [("", snap.healthy)],
    )
    family(
        "last_pass_timestamp_seconds",
        "gauge",
        "Unix time at the end of the last loop pass over the records folder.",
        [("", snap.last_pass)],
    )
    family(
        "heartbeat_seconds",
        "gauge",
        "Configured heartbeat: this file is rewritten at least this often while the daemon runs.",
        [("", snap.heartbeat_seconds)],
    )
    family(
        "records_total",
        "counter",
        "Decision record files handled, by outcome (the ledger's counters).",
        by("outcome", snap.records_total),
    )
    family(
        "coalesced_after_approval_total",
        "counter",
        "Decisions folded into a request that was already approved (or needed no approval, "
        "or was taken away): in no request a person will look at; see `list`.",
        [("", snap.coalesced_after_approval)],
    )
    family(
        "requests_total",
        "counter",
        "Dispatch requests written, by route (synthetic handoff checks excluded).",
        by("route", snap.requests_total),
    )
    family(
        "requests_awaiting_approval",
        "gauge",
        "Requests in the requests folder awaiting approval now (no marker, not expired, "
        "not superseded), by route.",
        by("route", snap.awaiting),
    )
    family(
        "oldest_awaiting_approval_seconds",
        "gauge",
        "Age in seconds of the oldest request awaiting approval; 0 when none.",
        [("", snap.oldest_awaiting_s)],
    )
    family(
        "requests_expired",
        "gauge",
        "Requests in the requests folder whose expires_at passed without an approval "
        "marker, by route.",
        by("route", snap.expired),
    )
    family(
        "approvals_dir_readable",
        "gauge",
        "1 when the approvals folder (config approvals_dir) could be listed at the last "
        "check, else 0.",
        [("", snap.approvals_dir_readable)],
    )
    family(
        "records_awaiting_operator",
        "gauge",
        "Record files in the records folder whose decision was not dispatched and waits "
        "for an operator (replay, fix or remove the file), by outcome; not cleared by time.",
        by("outcome", snap.awaiting_operator),
    )
    family(
        "config_last_reload_successful",
        "gauge",
        "0 after a reload (SIGHUP) refused the config file, so the daemon runs an older "
        "config; 1 after a start or a good reload.",
        [("", snap.reload_ok)],
    )
    return "\n".join(lines) + "\n"


class MetricsReport:
    """The Prometheus textfile (issue 10): rendered by the pure `render_metrics`, written
    temp file + fsync + rename + folder fsync (never partial, readable by node_exporter),
    only when a value other than the two time-derived ones changed, or at the heartbeat.
    A path that cannot be written is reported once per streak and retried; dispatching
    never waits for it."""

    def __init__(self, config: Config, report: StateReport) -> None:
        self.config = config
        self.report = report
        self.written: Optional[MetricsSnapshot] = None  # timeless() of the last write
        # Intervals (heartbeat, retry) on the monotonic clock: `mono` arguments below.
        self.last_write = 0.0
        self.failing = False
        self.retry_at = 0.0

    def snapshot(
        self,
        approvals: ApprovalBook,
        index: FileIndex,
        watcher: str,
        last_pass: float,
        now: float,
    ) -> MetricsSnapshot:
        report, routes = self.report, self.config.routes
        requests = set(routes) | set(report.requests_by_route)
        oldest = approvals.oldest_awaiting
        health = judge_health(
            {"status": report.status, "timestamp_utc": iso_ts(report.last_write_wall)},
            report.status not in ("stopping", "stopped"),
            self.config.heartbeat_seconds,
            now,
        )
        return MetricsSnapshot(
            version=VERSION,
            watcher=watcher,
            healthy=health["healthy"],
            heartbeat_seconds=self.config.heartbeat_seconds,
            records_total=tuple((k, report.counters.get(k, 0)) for k in sorted(OUTCOMES)),
            requests_total=tuple((r, report.requests_by_route.get(r, 0)) for r in sorted(requests)),
            awaiting=approvals.by_route("awaiting", routes),
            expired=approvals.by_route("expired", routes),
            approvals_dir_readable=approvals.dir_state() != "unreadable",
            awaiting_operator=tuple(
                (k, index.awaiting_operator.get(k, 0)) for k in sorted(OPERATOR_OUTCOMES)
            ),
            reload_ok=report.reload_ok,
            coalesced_after_approval=report.counters.get("coalesced_after_approval", 0),
            last_pass=last_pass,
            oldest_awaiting_s=0.0 if oldest is None else max(0.0, now - oldest),
        )

    def due(self) -> float:
        """When the next write is due while nothing changes (heartbeat, or a retry)."""
        due = self.last_write + self.config.heartbeat_seconds
        return min(due, self.retry_at) if self.failing else due

    def write(self, snap: MetricsSnapshot, mono: float, force: bool = False) -> bool:
        """Write when due; True when the file has just become unwritable (newly reported)."""
        changed = self.written != snap.timeless()
        if not (force or changed or mono >= self.due()):
            return False
        if self.failing and not force and mono < self.retry_at:
            return False  # retried every poll_seconds, not on every pass
        path = self.config.metrics_textfile
        try:
            # 0644 whatever the umask (the unit has UMask=0027): node_exporter runs as
            # another user and must read it.
            write_file_durably(path, render_metrics(snap).encode(), 0o644, exact_mode=True)
        except OSError as exc:
            self.retry_at = mono + min(self.config.poll_seconds, self.config.heartbeat_seconds)
            if not self.failing:
                self.failing = True
                self.report.error(
                    f"metrics textfile {path}: cannot write ({exc.strerror or exc}); "
                    "retrying, dispatching goes on",
                    level="WARNING",
                    cause="metrics",
                    file=path,
                )
                return True
            return False
        if self.failing:
            self.failing = False
            self.report.clear("metrics")
            self.report.log.event("recovered", file=path, reason="metrics textfile written again")
        self.written = snap.timeless()
        self.last_write = mono
        return False

"""Issue 9, time: intervals, watchdog pings and polling run on the monotonic clock, so a
backward step of the wall clock (NTP, a VM restore) stalls nothing. The step is real: the
daemon runs under libfaketime and the test moves its wall clock back an hour."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import Root, now_iso, record, wait_for
from .edges import LIBFAKETIME, PY, faketime_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LIBFAKETIME, reason="needs faketime (make venv)"),
]


def _pings(daemon, seconds: float) -> int:
    daemon.messages.clear()
    time.sleep(seconds)
    return daemon.read_notify().count("WATCHDOG=1")


def test_backward_clock_step_keeps_pings_and_polling_going(
    root: Root, spawn, tmp_path: Path
) -> None:
    root.write_config(settle_seconds=0)
    control = tmp_path / "faketime.rc"
    env = faketime_env(control)
    env.update({"WATCHDOG_USEC": "400000", "HYOPS_DISPATCHER_NO_INOTIFY": "1"})
    daemon = spawn(PY, root, env=env).wait_ready()
    assert _pings(daemon, 1.0) >= 3  # every 0.2 s (half of WatchdogSec)
    control.write_text("-3600s\n")  # the wall clock jumps back an hour
    assert _pings(daemon, 1.0) >= 3, "watchdog pings stopped after the clock step"
    # Polling goes on: a record (stamped in the daemon's new wall time) is picked up by
    # the next poll (poll_seconds 5), with inotify off.
    root.drop("after.json", record("clock-1", timestamp_utc=now_iso(-3600)))
    wait_for(lambda: root.outcomes().get("after.json", ("",))[0] == "emitted", 8, "polled")
    assert daemon.stop() == 0


def test_backward_clock_step_keeps_the_metrics_heartbeat(root: Root, spawn, tmp_path: Path) -> None:
    """The metrics file is rewritten at every heartbeat (alerts read its last pass) and
    says healthy, also after the wall clock stepped back: its intervals are monotonic."""
    root.write_config(settle_seconds=0, heartbeat_seconds=5)
    control = tmp_path / "faketime.rc"
    daemon = spawn(PY, root, env=faketime_env(control)).wait_ready()
    metrics = root.path / "state" / "metrics.prom"
    wait_for(metrics.exists, 5, "the metrics file")
    control.write_text("-3600s\n")
    stepped = time.time()  # the test's own clock is real (file mtimes are too)
    wait_for(lambda: metrics.stat().st_mtime > stepped + 1, 12, "a heartbeat rewrite")
    assert "\nhyops_decision_dispatcher_healthy 1\n" in metrics.read_text()
    assert daemon.stop() == 0

"""Property tests (hypothesis): arbitrary bytes, arbitrary JSON and half-valid records as
record files. The daemon never crashes, every file gets a final outcome, every request
and state.json validate, and a second pass changes nothing."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hyops_dispatcher.config import parse_config
from hyops_dispatcher.daemon import start_daemon
from hyops_dispatcher.jsonlog import JsonLog
from hyops_dispatcher.ledger import Ledger
from hyops_dispatcher.states import OUTCOMES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import ROUTES, Daemon, Root, assert_valid, wait_for

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    st.sampled_from(["cutover", "failback", "Cutover", "reboot", "", "queued-local-exec"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    json_values,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "decision_id": field_values,
        "decision_type": field_values,
        "status": field_values,
        "timestamp_utc": st.one_of(
            st.sampled_from(["2026-01-01T00:00:00Z", "bad", ""]),
            st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)).map(
                lambda t: t.isoformat()
            ),
            json_values,
        ),
        "rationale": json_values,
        "checks": json_values,
    },
)
contents = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    records.map(lambda v: json.dumps(v).encode()),
    records.map(lambda v: json.dumps(v).encode()[: max(1, len(json.dumps(v)) // 2)]),
)
names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True).map(lambda s: s + ".json")
file_sets = st.dictionaries(names, contents, min_size=1, max_size=12)


def make_config(base: Path, records_dir: Path) -> Any:
    doc = {
        "schema_version": 1,
        "root": str(base),
        "decision_records_dir": str(records_dir),
        "execution_mode": "record-only",
        "require_approval": True,
        "poll_seconds": 5,
        "settle_seconds": 0,
        "max_record_bytes": 1024,
        "routes": {**ROUTES, "failback": {**ROUTES["failback"], "coalesce_seconds": 60}},
    }
    return parse_config(json.dumps(doc).encode(), str(base / "config" / "config.json"))


def run_pass(cfg: Any) -> None:
    os.makedirs(os.path.dirname(cfg.log_file), exist_ok=True)
    log = JsonLog(cfg.log_file, "DEBUG", cfg.log_max_bytes, 2, to_stderr=False)
    daemon = start_daemon(cfg, log, use_inotify=False)
    try:
        daemon.scan(full=True)
        daemon.write_state(force=True)
    finally:
        daemon.stop()
        log.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=file_sets)
def test_any_file_gets_an_outcome_and_nothing_crashes(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "root"
        records_dir = Path(tmp) / "records"
        (base / "config").mkdir(parents=True)
        (base / "logs").mkdir()
        records_dir.mkdir()
        old = time.time() - 5
        for name, data in files.items():
            (records_dir / name).write_bytes(data)
            os.utime(records_dir / name, (old, old))
        cfg = make_config(base, records_dir)
        run_pass(cfg)
        ledger = Ledger(cfg.ledger_file, readonly=True)
        rows = {r["file"]: r for r in ledger.listing(OUTCOMES)}
        ledger.close()
        assert set(rows) == set(files)
        for row in rows.values():
            assert row["outcome"] in OUTCOMES and row["outcome"] != "pending"
            if row["outcome"] != "emitted":
                assert row["reason"], row
        requests = sorted(os.listdir(cfg.requests_dir))
        emitted = {r["dispatch_id"] for r in rows.values() if r["outcome"] == "emitted"}
        assert {n.removesuffix(".json") for n in requests} == emitted
        for name in requests:
            assert_valid("dispatch-request", json.loads(Path(cfg.requests_dir, name).read_text()))
        assert_valid("dispatcher-state", json.loads(Path(cfg.state_file).read_text()))
        for line in Path(cfg.log_file).read_text().splitlines():
            json.loads(line)
        # A second pass (a restart) writes nothing new.
        run_pass(cfg)
        assert sorted(os.listdir(cfg.requests_dir)) == requests


def test_non_utf8_file_name_is_rejected_not_fatal(tmp_path: Path) -> None:
    base, records_dir = tmp_path / "root", tmp_path / "records"
    (base / "config").mkdir(parents=True)
    records_dir.mkdir()
    with open(os.path.join(os.fsencode(records_dir), b"\xff\xfe.json"), "wb") as fh:
        fh.write(b"{}")
    cfg = make_config(base, records_dir)
    run_pass(cfg)
    run_pass(cfg)
    ledger = Ledger(cfg.ledger_file, readonly=True)
    rows = ledger.listing(("rejected",))
    ledger.close()
    assert [r["reason"] for r in rows] == ["file name is not valid UTF-8"]


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=file_sets)
def test_running_process_survives_arbitrary_files(files: dict[str, bytes], python: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "root"
        (base / "config").mkdir(parents=True)
        root = Root(
            path=base, records=Path(tmp) / "records", config=base / "config" / "config.json"
        )
        root.records.mkdir()
        root.write_config(settle_seconds=0, max_record_bytes=1024)
        daemon = Daemon(python, root).wait_ready()
        try:
            for name, data in files.items():
                root.drop(name, data)
            wait_for(lambda: set(root.outcomes()) == set(files), 10, "an outcome per file")
            assert daemon.proc.poll() is None
        finally:
            assert daemon.stop() == 0

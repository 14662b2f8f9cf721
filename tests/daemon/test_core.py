"""Table-driven tests of the pure core of files/dispatcher.py (no I/O, injected clock)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hyops_dispatcher.config import ConfigError, parse_config
from hyops_dispatcher.decide import LastEmit, decide
from hyops_dispatcher.ids import DISPATCH_ID_RE, decision_hash, make_dispatch_id, parse_iso_utc
from hyops_dispatcher.jsontext import DEPTH_CUT, dump_json, json_depth
from hyops_dispatcher.record import (
    REQUEST_DEPTH_MAX,
    RecordRejected,
    decision_time,
    is_record_name,
    parse_record,
    validate_record,
)

from .conftest import BASE_CONFIG, ROUTES, assert_valid

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
NOW_ISO = "2026-09-21T14:13:20+00:00"


def config(**over: Any) -> Any:
    doc = copy.deepcopy(BASE_CONFIG)
    for key, value in over.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return parse_config(json.dumps(doc).encode(), "/srv/dd/config/config.json")


def route_over(name: str, **over: Any) -> dict[str, Any]:
    routes = copy.deepcopy(ROUTES)
    for key, value in over.items():
        if value is None:
            routes[name].pop(key, None)
        else:
            routes[name][key] = value
    return routes


def test_config_defaults_and_derived_paths() -> None:
    cfg = config(root=None)
    assert cfg.root == "/srv/dd"
    assert cfg.requests_dir == "/srv/dd/state/requests"
    assert cfg.state_file == "/srv/dd/state/state.json"
    assert cfg.ledger_file == "/srv/dd/state/ledger.sqlite3"
    assert cfg.log_file == "/srv/dd/logs/dispatcher.log"
    assert cfg.lock_file == "/srv/dd/state/dispatcher.lock"
    assert (cfg.heartbeat_seconds, cfg.max_record_age_seconds, cfg.settle_seconds) == (60, 86400, 2)
    explicit = config(requests_dir="/x/req", log_file="/x/log/d.log")
    assert explicit.requests_dir == "/x/req" and explicit.log_file == "/x/log/d.log"


def test_config_approvals_and_metrics_paths() -> None:
    cfg = config()
    assert cfg.approvals_dir == "/opt/hybridops/decision-consumer/state/approvals"
    assert cfg.metrics_textfile == "/srv/dd/state/metrics.prom"
    textfile = "/var/lib/prometheus/node-exporter/hyops_decision_dispatcher.prom"
    explicit = config(approvals_dir="/srv/consumer/approvals/", metrics_textfile=textfile)
    assert explicit.approvals_dir == "/srv/consumer/approvals"
    assert explicit.metrics_textfile == textfile


CONFIG_ERRORS = [
    ({"poll_seconds": 4}, "poll_seconds: must be an integer between 5 and 3600"),
    ({"poll_seconds": "15"}, "poll_seconds"),
    ({"poll_seconds": True}, "poll_seconds"),
    ({"poll_seconds": None}, "poll_seconds: required"),
    ({"routes": {}}, "routes: needs at least one route"),
    ({"routes": []}, "routes: must be an object"),
    ({"execution_mode": "execute"}, "execution_mode: only 'record-only'"),
    ({"require_approval": None}, "require_approval: required"),
    ({"require_approval": "false"}, "require_approval: must be true or false"),
    ({"schema_version": 2}, "schema_version: must be 1"),
    ({"log_level": "info"}, "log_level"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"decision_records_dir": "relative/path"}, "decision_records_dir: must be an absolute path"),
    ({"requests_dir": "/srv/records"}, "requests_dir: must differ"),
    ({"approvals_dir": "approvals"}, "approvals_dir: must be an absolute path"),
    ({"approvals_dir": ""}, "approvals_dir: must be an absolute path"),
    ({"metrics_textfile": "metrics.prom"}, "metrics_textfile: must be an absolute path"),
    ({"metrics_textfile": 1}, "metrics_textfile: must be an absolute path"),
    ({"metrics_textfile": "/srv/m/dd.txt"}, "metrics_textfile: must end in .prom"),
    ({"max_record_bytes": 10}, "max_record_bytes"),
    ({"max_record_age_seconds": 0}, "max_record_age_seconds"),
    ({"settle_seconds": 1.5}, "settle_seconds"),
    ({"log_backup_count": 0}, "log_backup_count"),
    ({"routes": {"Cutover": ROUTES["cutover"]}}, "routes: key 'Cutover'"),
    ({"routes": {"cutover": "blueprint"}}, "routes.cutover: must be an object"),
    ({"routes": route_over("cutover", target_kind="script")}, "routes.cutover.target_kind"),
    ({"routes": route_over("cutover", target_ref="DR/Upper")}, "routes.cutover.target_ref"),
    ({"routes": route_over("cutover", target_ref=None)}, "routes.cutover.target_ref: required"),
    ({"routes": route_over("cutover", target_env=" dr")}, "routes.cutover.target_env"),
    ({"routes": route_over("cutover", execution_plane="ssh")}, "routes.cutover.execution_plane"),
    ({"routes": route_over("cutover", requires_approval="false")}, "requires_approval: must be"),
    ({"routes": route_over("cutover", coalesce_seconds=-1)}, "coalesce_seconds"),
    ({"routes": route_over("cutover", approval_ttl_seconds=59)}, "approval_ttl_seconds"),
    ({"routes": route_over("cutover", colour="red")}, "routes.cutover.colour: unknown key"),
]


@pytest.mark.parametrize(("over", "message"), CONFIG_ERRORS, ids=[m for _, m in CONFIG_ERRORS])
def test_config_errors_name_the_key(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**over)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_route_requires_approval_null_is_refused() -> None:
    # CONTRACT.md 5: the original treated null as "no approval".
    routes = copy.deepcopy(ROUTES)
    routes["cutover"]["requires_approval"] = None
    with pytest.raises(ConfigError, match=r"routes\.cutover\.requires_approval"):
        config(routes=routes)


RECORD_REJECTS = [
    (b"", "empty file", True),
    (b'{"decision_id": "a"', "invalid JSON", True),
    (b"\xff\xfe{}", "not UTF-8", True),
    (b"[1, 2]", "JSON is an array, not an object", False),
    (b'"text"', "JSON is a string", False),
    (b"42", "JSON is a number", False),
    (b"null", "JSON is null", False),
    (b'{"decision_id": NaN}', "invalid JSON", True),
    (b"[" * 100000 + b"]" * 100000, "", None),
]


@pytest.mark.parametrize(("data", "reason", "retryable"), RECORD_REJECTS)
def test_parse_record_rejects(data: bytes, reason: str, retryable: bool | None) -> None:
    with pytest.raises(RecordRejected) as err:
        parse_record(data)
    assert reason in err.value.reason
    if retryable is not None:
        assert err.value.retryable is retryable


def test_parse_record_accepts_bom_and_whitespace() -> None:
    assert parse_record(b'\xef\xbb\xbf {"a": 1}\n') == {"a": 1}


VALIDATE_REJECTS = [
    ({}, "missing decision_id"),
    ({"decision_id": 7, "decision_type": "cutover"}, "decision_id must be a string"),
    ({"decision_id": "../etc/passwd", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "a b", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "-rf", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "x" * 129, "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "ok\n", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "ok"}, "missing decision_type"),
    ({"decision_id": "ok", "decision_type": ""}, "decision_type must be a non-empty string"),
    ({"decision_id": "ok", "decision_type": ["cutover"]}, "decision_type must be"),
]


@pytest.mark.parametrize(("doc", "reason"), VALIDATE_REJECTS)
def test_validate_record_rejects(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordRejected) as err:
        validate_record(doc)
    assert reason in err.value.reason
    assert not err.value.retryable


ISO_CASES = [
    ("2026-03-20T10:15:00+00:00", 1774001700.0),
    ("2026-03-20T10:15:00Z", 1774001700.0),
    ("2026-03-20T10:15:00", 1774001700.0),
    ("2026-03-20T12:15:00+02:00", 1774001700.0),
    ("2026-03-20T10:15:00.5+00:00", 1774001700.5),
    ("2026-03-20T10:15:00.123456789Z", 1774001700.123456789),
    ("2026-02-30T10:15:00Z", None),
    ("yesterday", None),
    (1774001700, None),
    (None, None),
]


@pytest.mark.parametrize(("text", "epoch"), ISO_CASES)
def test_parse_iso_utc(text: Any, epoch: float | None) -> None:
    got = parse_iso_utc(text)
    if epoch is None:
        assert got is None
    else:
        assert got == pytest.approx(epoch)


DISPATCH_ID_CASES = [
    # (record, mtime, expected timestamp part, source)
    ({"timestamp_utc": "2026-03-20T10:15:00+00:00"}, NOW, "20260320T101500Z", "timestamp_utc"),
    ({}, NOW, "20260921T141320Z", "file_mtime"),
    ({"timestamp_utc": "garbage"}, NOW, "20260921T141320Z", "file_mtime"),
]


@pytest.mark.parametrize(("extra", "mtime", "ts", "source"), DISPATCH_ID_CASES)
def test_dispatch_id_derivation(extra: dict[str, Any], mtime: float, ts: str, source: str) -> None:
    rec = {"decision_id": "test-cutover-001", "decision_type": "cutover", **extra}
    epoch, src = decision_time(rec, "test-cutover-001", mtime)
    assert src == source
    dispatch_id = make_dispatch_id(epoch, "cutover", "test-cutover-001")
    assert dispatch_id == f"dispatch-{ts}-cutover-{decision_hash('test-cutover-001')}"
    assert DISPATCH_ID_RE.match(dispatch_id)


def test_dispatch_id_from_decision_id_timestamp() -> None:
    did = "decision-20260320T101500Z-cutover-0c1d2e3f"
    epoch, src = decision_time({}, did, NOW)
    assert src == "decision_id"
    assert make_dispatch_id(epoch, "cutover", did).startswith("dispatch-20260320T101500Z-cutover-")


def test_dispatch_id_is_stable_and_distinct() -> None:
    a = make_dispatch_id(NOW, "cutover", "a")
    assert a == make_dispatch_id(NOW, "cutover", "a")
    assert a != make_dispatch_id(NOW, "cutover", "b")


def rec(**over: Any) -> dict[str, Any]:
    doc = {
        "decision_id": "decision-20260921T141000Z-cutover-0c1d2e3f",
        "decision_type": "cutover",
        "timestamp_utc": "2026-09-21T14:10:00+00:00",
        "status": "emitted",
        "rationale": "probe failed",
        "checks": [{"metric": "up", "ok": False}],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


LAST = {"failback": LastEmit(NOW - 100, "dispatch-20260921T141140Z-failback-aaaaaaaa")}

CUTOVER_LAST = LastEmit(NOW - 200, "dispatch-20260921T141140Z-cutover-cccccccc")
# The last cutover request, then a failback request after it: the episode is over.
EPISODE_ENDED = {"cutover": CUTOVER_LAST, "failback": LAST["failback"]}
# A failback before the last cutover: that cutover's episode is still open.
EPISODE_OPEN = {"cutover": CUTOVER_LAST, "failback": LastEmit(NOW - 300, LAST["failback"][1])}

DECIDE_CASES = [
    # id, record, config overrides, last_emit, force, outcome, reason part, status
    ("routed", rec(), {}, {}, False, "emitted", "", "awaiting-approval"),
    ("global-no-approval", rec(), {"require_approval": False}, {}, False, "emitted", "", "queued"),
    ("route-no-approval", rec(decision_type="failback"), {}, {}, False, "emitted", "", "queued"),
    (
        "route-overrides-global",
        rec(decision_type="cutover"),
        {"require_approval": False, "routes": route_over("cutover", requires_approval=True)},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    ("unrouted", rec(decision_type="reboot"), {}, {}, False, "unrouted", "no route", None),
    (
        "case-near-miss",
        rec(decision_type="CutOver"),
        {},
        {},
        False,
        "unrouted",
        "differs only by case",
        None,
    ),
    (
        "stale",
        rec(timestamp_utc="2026-09-19T14:10:00+00:00"),
        {},
        {},
        False,
        "stale",
        "over max_record_age_seconds",
        None,
    ),
    (
        "stale-replayed",
        rec(timestamp_utc="2026-09-19T14:10:00+00:00"),
        {},
        {},
        True,
        "emitted",
        "replayed",
        "awaiting-approval",
    ),
    (
        "queued-local-exec",
        rec(status="queued-local-exec"),
        {},
        {},
        False,
        "skipped",
        "queued-local-exec",
        None,
    ),
    (
        "proposed-is-dispatched",
        rec(status="proposed"),
        {},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "coalesced",
        rec(decision_type="failback"),
        {"routes": route_over("failback", coalesce_seconds=600)},
        LAST,
        False,
        "coalesced",
        "dispatch-20260921T141140Z-failback-aaaaaaaa",
        None,
    ),
    (
        "outside-window",
        rec(decision_type="failback"),
        {"routes": route_over("failback", coalesce_seconds=60)},
        LAST,
        False,
        "emitted",
        "",
        "queued",
    ),
    ("coalesce-off", rec(decision_type="failback"), {}, LAST, False, "emitted", "", "queued"),
    (
        # A synthetic check waits for approval even on a no-approval route (issue 9).
        "handoff-never-coalesced",
        rec(decision_id="handoff-check-x", decision_type="failback"),
        {"routes": route_over("failback", coalesce_seconds=600)},
        LAST,
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        # A failback after the last cutover ended that outage: a new cutover request.
        "episode-ended-by-other-route",
        rec(),
        {"routes": route_over("cutover", coalesce_seconds=600)},
        EPISODE_ENDED,
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "same-episode-coalesced",
        rec(),
        {"routes": route_over("cutover", coalesce_seconds=600)},
        EPISODE_OPEN,
        False,
        "coalesced",
        "dispatch-20260921T141140Z-cutover-cccccccc",
        None,
    ),
    (
        "future-refused",
        rec(timestamp_utc="2100-01-01T00:00:00Z"),
        {},
        {},
        False,
        "rejected",
        "in the future",
        None,
    ),
    (
        "future-within-skew",
        rec(timestamp_utc="2026-09-21T14:17:00+00:00"),
        {},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "future-id-time-refused",
        rec(decision_id="decision-21000101T000000Z-cutover-x", timestamp_utc=None),
        {},
        {},
        False,
        "rejected",
        "from decision_id",
        None,
    ),
    (
        # Years before 1000 keep a four-digit year in the id (glibc's %Y would not).
        "year-5-replayed",
        rec(timestamp_utc="0005-01-01T00:00:00Z"),
        {},
        {},
        True,
        "emitted",
        "replayed",
        "awaiting-approval",
    ),
    (
        "out-of-range-timestamp-uses-id-time",
        rec(timestamp_utc="9999-12-31T23:59:59-23:59"),
        {},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
]


@pytest.mark.parametrize(
    ("record", "over", "last", "force", "outcome", "reason", "status"),
    [c[1:] for c in DECIDE_CASES],
    ids=[c[0] for c in DECIDE_CASES],
)
def test_decide(
    record: dict[str, Any],
    over: dict[str, Any],
    last: dict[str, Any],
    force: bool,
    outcome: str,
    reason: str,
    status: str | None,
) -> None:
    cfg = config(**over)
    decision = decide(
        record,
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=cfg,
        now=NOW,
        last_emit=last,
        force=force,
    )
    assert decision.outcome == outcome
    assert reason in decision.reason
    if status is None:
        assert decision.request is None
    else:
        assert decision.request is not None
        assert decision.request["status"] == status
        assert decision.request["requires_approval"] is (status == "awaiting-approval")
        assert decision.request["dispatch_id"] == decision.dispatch_id
        assert_valid("dispatch-request", decision.request)


@pytest.mark.parametrize("awaiting", [True, False])
def test_a_request_names_the_other_routes_request_still_awaiting_approval(awaiting: bool) -> None:
    asked: list[str] = []

    def awaits(dispatch_id: str) -> bool:
        asked.append(dispatch_id)
        return awaiting

    decision = decide(
        rec(decision_type="failback"),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(),
        now=NOW,
        last_emit={"cutover": CUTOVER_LAST},
        still_waiting=awaits,
    )
    assert asked == [CUTOVER_LAST.dispatch_id]
    assert decision.request is not None
    assert decision.request.get("supersedes") == (CUTOVER_LAST.dispatch_id if awaiting else None)
    assert_valid("dispatch-request", decision.request)


def test_a_synthetic_request_always_awaits_approval_and_says_so() -> None:
    decision = decide(
        rec(decision_id="handoff-check-1", decision_type="failback"),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(require_approval=False),
        now=NOW,
        last_emit={"cutover": CUTOVER_LAST},
        still_waiting=lambda _id: True,  # a synthetic check supersedes nothing
    )
    req = decision.request
    assert req is not None and "supersedes" not in req
    assert (req["status"], req["requires_approval"], req["approval_source"], req["synthetic"]) == (
        "awaiting-approval",
        True,
        "synthetic",
        True,
    )
    assert_valid("dispatch-request", req)


def test_carried_checks_are_cut_at_the_request_depth() -> None:
    deep: Any = []
    for _ in range(200):
        deep = [deep]
    decision = decide(
        rec(checks=deep),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(),
        now=NOW,
        last_emit={},
    )
    assert decision.request is not None
    assert json_depth(dump_json(decision.request).decode()) == REQUEST_DEPTH_MAX
    assert DEPTH_CUT in dump_json(decision.request).decode()


@pytest.mark.parametrize(
    ("text", "depth"),
    [("{}", 1), ('{"a": "[[[{{{"}', 1), ('[[], [[["\\"]]]]', 4), ('"]]"', 0), ("1", 0)],
)
def test_json_depth_ignores_brackets_in_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_request_carries_record_fields_and_expiry() -> None:
    cfg = config()
    decision = decide(
        rec(decision_type="failback", rationale=["not", "a", "string"], checks="nope"),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=cfg,
        now=NOW,
        last_emit={},
    )
    req = decision.request
    assert req["rationale"] is None and req["checks"] == []
    assert req["approval_source"] == "route" and req["route"] == "failback"
    assert req["expires_at"] == "2026-09-21T15:13:20+00:00"
    assert req["timestamp_utc"] == NOW_ISO
    assert_valid("dispatch-request", req)


def test_dump_json_survives_lone_surrogates_and_refuses_nan() -> None:
    out = dump_json({"rationale": "\ud800"})
    assert json.loads(out) == {"rationale": "\ud800"}
    with pytest.raises(ValueError):
        dump_json({"x": float("nan")})


@pytest.mark.parametrize(
    ("name", "is_record"),
    [
        ("a.json", True),
        (".a.json.tmp", False),
        (".a.json", False),
        ("a.json.tmp", False),
        ("a.JSON", False),
        ("dispatch.json", True),
    ],
)
def test_record_names(name: str, is_record: bool) -> None:
    assert is_record_name(name) is is_record

"""Golden files: tests/daemon/golden/<case>.record.json -> <case>.expected.json.

The expected file holds the outcome and the full request the core builds with a fixed
clock. Regenerate after an intended change with UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hyops_dispatcher.config import parse_config
from hyops_dispatcher.decide import decide
from hyops_dispatcher.jsontext import dump_json
from hyops_dispatcher.record import parse_record

from .conftest import ROUTES, assert_valid

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name.removesuffix(".record.json") for p in GOLDEN.glob("*.record.json"))
NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
MTIME = NOW - 30
CONFIG: dict[str, Any] = {
    "schema_version": 1,
    "root": "/opt/hybridops/decision-dispatcher",
    "decision_records_dir": "/opt/hybridops/decision-service/state/records",
    "execution_mode": "record-only",
    "require_approval": True,
    "poll_seconds": 15,
    "routes": ROUTES,
}


def run_case(case: str) -> dict[str, Any]:
    cfg = parse_config(
        json.dumps(CONFIG).encode(), "/opt/hybridops/decision-dispatcher/config/config.json"
    )
    record = parse_record((GOLDEN / f"{case}.record.json").read_bytes())
    path = f"{cfg.records_dir}/{case}.json"
    decision = decide(record, record_path=path, mtime=MTIME, config=cfg, now=NOW)
    return {
        "outcome": decision.outcome,
        "reason": decision.reason,
        "dispatch_id": decision.dispatch_id,
        "request": decision.request,
    }


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 5


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    got = run_case(case)
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    expected = json.loads(expected_path.read_text())
    assert got == expected
    if got["request"] is not None:
        assert_valid("dispatch-request", got["request"])
        # What the daemon writes is exactly this document, byte for byte canonical.
        assert json.loads(dump_json(got["request"])) == got["request"]


def test_request_bytes_are_one_sorted_line() -> None:
    """What a consumer or an operator reading a request file sees, byte for byte: one line
    of JSON, keys sorted, ASCII, ending in a newline (golden/service-cutover.request.json;
    `jq .` shows it indented)."""
    request = run_case("service-cutover")["request"]
    data = dump_json(request)
    path = GOLDEN / "service-cutover.request.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(data)
    assert data == path.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"}\n")
    assert json.loads(data) == request


PY39_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from hyops_dispatcher.config import parse_config
from hyops_dispatcher.decide import decide
from hyops_dispatcher.record import parse_record
config = json.loads(sys.argv[2])
golden, now, mtime = sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
cfg = parse_config(json.dumps(config).encode(), config["root"] + "/config/config.json")
out = {}
for case in sys.argv[6:]:
    record = parse_record(open(golden + "/" + case + ".record.json", "rb").read())
    path = cfg.records_dir + "/" + case + ".json"
    dec = decide(record, record_path=path, mtime=mtime, config=cfg, now=now)
    out[case] = {"outcome": dec.outcome, "reason": dec.reason,
                 "dispatch_id": dec.dispatch_id, "request": dec.request}
print(json.dumps(out))
"""


def test_golden_on_python39() -> None:
    """The pure core gives the same requests on the oldest supported Python."""
    from .conftest import DISPATCHER, PY39

    if PY39 is None:
        pytest.skip("pyenv has no Python 3.9 (looked under $(pyenv root)/versions/3.9.*)")
    result = subprocess.run(
        [
            PY39,
            "-c",
            PY39_SCRIPT,
            str(DISPATCHER.parent),
            json.dumps(CONFIG),
            str(GOLDEN),
            str(NOW),
            str(MTIME),
            *CASES,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(result.stdout)
    for case in CASES:
        assert got[case] == json.loads((GOLDEN / f"{case}.expected.json").read_text()), case

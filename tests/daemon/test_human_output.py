"""Human output that reads at a glance, JSON for machines (issue 16): `list` is a table
with a header (dispatch id, approval, age, expires in, target, decision), the oldest
waiting first, filters `--state`/`--route`; `status` says "and N more" past the ten it
lists; a closed pipe is quiet; `--json` on explain, replay and validate-handoff;
validate-handoff prints a CHECK/STATUS/DETAIL table; JSON times are ISO 8601. Real CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from .conftest import DISPATCHER, Root, cli, cli_env, record, wait_for
from .request_seed import request_doc, seed_request

PY = sys.executable


def _seed_twelve(root: Root) -> list[str]:
    now = time.time()
    ids = []
    for i in range(12):
        route = "cutover" if i % 3 else "failback"
        doc = request_doc(f"dec-{i:02d}", route, now - 3600 * (i + 1), ttl=86400 * 3)
        ids.append(seed_request(root, doc))
    return ids  # ids[11] is the oldest


def test_list_is_a_table_oldest_first_with_filters(root: Root, tmp_path) -> None:
    (tmp_path / "approvals").mkdir()
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    ids = _seed_twelve(root)
    text = cli(PY, root, "list", env={"NO_COLOR": "1"}).stdout
    lines = text.splitlines()
    header = next(ln for ln in lines if ln.lstrip().startswith("DISPATCH ID"))
    for column in ("APPROVAL", "AGE", "EXPIRES IN", "TARGET", "DECISION"):
        assert column in header, header
    rows = [ln for ln in lines if ln.lstrip().startswith("dispatch-")]
    assert [r.split()[0] for r in rows] == list(reversed(ids))
    assert "12h" in rows[0] and "dr/postgresql-ha-failover-gcp@v1" in text and "dec-11" in rows[0]
    assert "\x1b[" not in text
    starts = {r.index(r.split()[1]) for r in rows}
    assert len(starts) == 1, "columns not aligned"
    only = cli(PY, root, "list", "--route", "failback").stdout
    assert len([ln for ln in only.splitlines() if ln.lstrip().startswith("dispatch-")]) == 4
    none = cli(PY, root, "list", "--state", "approved").stdout
    assert not [ln for ln in none.splitlines() if ln.lstrip().startswith("dispatch-")]
    doc = json.loads(cli(PY, root, "list", "--json", "--state", "awaiting").stdout)
    assert [r["dispatch_id"] for r in doc["requests"]] == list(reversed(ids))


def test_status_says_and_n_more(root: Root, tmp_path, spawn) -> None:
    (tmp_path / "approvals").mkdir()
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    _seed_twelve(root)
    daemon = spawn(PY, root).wait_ready()
    wait_for(lambda: root.state().get("approvals", {}).get("awaiting") == 12, 10, "12 awaiting")
    text = cli(PY, root, "status").stdout
    assert "and 2 more" in text, text
    assert not re.search(r"age \d+\.\d s", text), text
    # every counter's value stands apart from its name, in one column
    counters = [ln for ln in text.splitlines() if re.match(r"^  [a-z_]+:", ln)]
    assert "coalesced_after_approval" in " ".join(counters), text
    assert all(re.match(r"^  [a-z_]+: +\d+$", ln) for ln in counters), counters
    assert len({ln.index(ln.split()[1]) for ln in counters}) == 1, counters
    assert daemon.stop() == 0


def test_a_closed_pipe_is_quiet(root: Root, tmp_path) -> None:
    (tmp_path / "approvals").mkdir()
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    for i in range(400):
        seed_request(root, request_doc(f"dec-pipe-{i}", "cutover", time.time() - i))
    cmd = f"{PY} {DISPATCHER} --config {root.config} list | head -1"
    result = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert result.stderr == "", result.stderr


def test_json_on_explain_replay_and_a_handoff_table(root: Root, spawn) -> None:
    root.drop("e1.json", record("explain-1"))
    root.drop("bad.json", b"[]")
    assert json.loads(cli(PY, root, "explain", "e1.json", "--json").stdout)["would"] == "emitted"
    refused = cli(PY, root, "replay", "explain-1", "--json")
    assert refused.returncode == 1 and "usage" not in refused.stderr, refused.stderr
    daemon = spawn(PY, root).wait_ready()
    table = cli(PY, root, "validate-handoff", "--timeout", "10")
    assert table.returncode == 0, table.stderr
    head = table.stdout.splitlines()[0].split()
    assert head == ["CHECK", "STATUS", "DETAIL"], table.stdout
    assert re.search(r"^request-written\s+ok", table.stdout, re.M), table.stdout
    doc = json.loads(cli(PY, root, "validate-handoff", "--json", "--timeout", "10").stdout)
    assert doc["ok"] is True
    listed = json.loads(cli(PY, root, "list", "--json").stdout)
    assert daemon.stop() == 0
    for row in listed["records"]:
        assert isinstance(row.get("handled_at"), (str, type(None))), row

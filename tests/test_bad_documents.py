"""A table of documents that each break one rule: every one is rejected, naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hyops_runner.schemas import load_schema, violations

REPO = Path(__file__).resolve().parents[1]
DELETE = object()

DEFAULTS = yaml.safe_load((REPO / "module.yml").read_text(encoding="utf-8"))["inputs"]["defaults"]
APPLY = {
    **DEFAULTS,
    "inventory_groups": {"edge_control": [{"name": "ctrl-01", "host": "10.10.0.5"}]},
    "dispatcher_routes": {
        "cutover": {
            "target_kind": "blueprint",
            "target_ref": "dr/postgresql-ha-failover-gcp@v1",
            "target_env": "dr",
            "execution_plane": "runner-local",
        }
    },
}
BASES: dict[str, Any] = {
    "module-inputs-apply": APPLY,
    "decision-record": load_schema("decision-record")["examples"][0],
    "dispatch-request": load_schema("dispatch-request")["examples"][0],
    "dispatcher-config": load_schema("dispatcher-config")["examples"][0],
    "dispatcher-state": load_schema("dispatcher-state")["examples"][0],
    "module-state": load_schema("module-state")["examples"][0],
}
R = ("dispatcher_routes", "cutover")
H = ("inventory_groups", "edge_control", 0)

# (row id, schema, path to change, new value or DELETE, the path the error must name)
ROWS: list[tuple[str, str, tuple[Any, ...], Any, str]] = [
    ("routes-empty", "module-inputs-apply", ("dispatcher_routes",), {}, "dispatcher_routes"),
    ("route-kind-enum", "module-inputs-apply", (*R, "target_kind"), "vm", "dispatcher_routes.cutover.target_kind"),
    ("route-plane-enum", "module-inputs-apply", (*R, "execution_plane"), "ssh", "dispatcher_routes.cutover.execution_plane"),
    ("route-ref-upper", "module-inputs-apply", (*R, "target_ref"), "DR/pg@v1", "dispatcher_routes.cutover.target_ref"),
    ("route-ref-trailing-dash", "module-inputs-apply", (*R, "target_ref"), "dr/pg-", "dispatcher_routes.cutover.target_ref"),
    ("route-ref-space", "module-inputs-apply", (*R, "target_ref"), "dr/pg ha", "dispatcher_routes.cutover.target_ref"),
    ("route-env-empty", "module-inputs-apply", (*R, "target_env"), "", "dispatcher_routes.cutover.target_env"),
    ("route-approval-null", "module-inputs-apply", (*R, "requires_approval"), None, "dispatcher_routes.cutover.requires_approval"),
    ("route-approval-string", "module-inputs-apply", (*R, "requires_approval"), "false", "dispatcher_routes.cutover.requires_approval"),
    ("route-missing-env", "module-inputs-apply", (*R, "target_env"), DELETE, "dispatcher_routes.cutover.target_env"),
    ("route-unknown-key", "module-inputs-apply", (*R, "target"), "x", "dispatcher_routes.cutover.target"),
    ("route-coalesce-negative", "module-inputs-apply", (*R, "coalesce_seconds"), -1, "dispatcher_routes.cutover.coalesce_seconds"),
    ("route-ttl-too-short", "module-inputs-apply", (*R, "approval_ttl_seconds"), 5, "dispatcher_routes.cutover.approval_ttl_seconds"),
    ("route-key-uppercase", "module-inputs-apply", ("dispatcher_routes", "Cutover"), APPLY["dispatcher_routes"]["cutover"], "dispatcher_routes.Cutover"),
    ("poll-below-5", "module-inputs-apply", ("dispatcher_poll_seconds",), 4, "dispatcher_poll_seconds"),
    ("poll-string", "module-inputs-apply", ("dispatcher_poll_seconds",), "15", "dispatcher_poll_seconds"),
    ("mode-execute", "module-inputs-apply", ("dispatcher_execution_mode",), "execute", "dispatcher_execution_mode"),
    ("approval-null", "module-inputs-apply", ("dispatcher_require_approval",), None, "dispatcher_require_approval"),
    ("state-enum", "module-inputs-apply", ("dispatcher_state",), "running", "dispatcher_state"),
    ("root-relative", "module-inputs-apply", ("dispatcher_root",), "opt/dd", "dispatcher_root"),
    ("metrics-textfile-relative", "module-inputs-apply", ("dispatcher_metrics_textfile",), "m/dd.prom", "dispatcher_metrics_textfile"),
    ("metrics-textfile-not-prom", "module-inputs-apply", ("dispatcher_metrics_textfile",), "/var/lib/m/dd.txt", "dispatcher_metrics_textfile"),
    ("approvals-dir-blank", "module-inputs-apply", ("dispatcher_approvals_dir",), "", "dispatcher_approvals_dir"),
    ("log-level-enum", "module-inputs-apply", ("dispatcher_log_level",), "LOUD", "dispatcher_log_level"),
    ("port-range", "module-inputs-apply", ("target_port",), 70000, "target_port"),
    ("service-user-root", "module-inputs-apply", ("dispatcher_service_user",), "root", "dispatcher_service_user"),
    ("unknown-input", "module-inputs-apply", ("dispatcher_routez",), {}, "dispatcher_routez"),
    ("no-edge-control", "module-inputs-apply", ("inventory_groups",), {}, "inventory_groups.edge_control"),
    ("edge-control-empty", "module-inputs-apply", ("inventory_groups", "edge_control"), [], "inventory_groups.edge_control"),
    ("host-without-name", "module-inputs-apply", (*H, "name"), DELETE, "inventory_groups.edge_control[0].name"),
    ("host-without-address", "module-inputs-apply", (*H, "host"), DELETE, "inventory_groups.edge_control[0].host"),
    ("host-bad-var-name", "module-inputs-apply", (*H, "ansible-user"), "x", "inventory_groups.edge_control[0].ansible-user"),
    ("required-env-bad-name", "module-inputs-apply", ("required_env",), ["GOOD", "1BAD"], "required_env[1]"),
    ("record-array", "decision-record", (), ["decision_id"], ""),
    ("record-no-type", "decision-record", ("decision_type",), DELETE, "decision_type"),
    ("record-unsafe-id", "decision-record", ("decision_id",), "../../etc/passwd", "decision_id"),
    ("record-checks-not-list", "decision-record", ("checks",), "degraded", "checks"),
    ("request-approval-string", "dispatch-request", ("requires_approval",), "true", "requires_approval"),
    ("request-status-mismatch", "dispatch-request", ("status",), "queued", "status"),
    ("request-bad-id", "dispatch-request", ("dispatch_id",), "dispatch-now-cutover-1", "dispatch_id"),
    ("request-executes", "dispatch-request", ("execution_mode",), "execute", "execution_mode"),
    ("request-extra-key", "dispatch-request", ("approved",), True, "approved"),
    ("config-no-routes", "dispatcher-config", ("routes",), {}, "routes"),
    ("config-poll-low", "dispatcher-config", ("poll_seconds",), 1, "poll_seconds"),
    ("config-approval-null", "dispatcher-config", ("routes", "cutover", "requires_approval"), None, "routes.cutover.requires_approval"),
    ("config-approvals-relative", "dispatcher-config", ("approvals_dir",), "approvals", "approvals_dir"),
    ("config-metrics-not-prom", "dispatcher-config", ("metrics_textfile",), "/srv/m/dd.txt", "metrics_textfile"),
    ("config-metrics-relative", "dispatcher-config", ("metrics_textfile",), "dd.prom", "metrics_textfile"),
    ("state-per-record-list", "dispatcher-state", ("processed_ids",), ["a", "b"], "processed_ids"),
    ("state-negative-count", "dispatcher-state", ("processed_count",), -1, "processed_count"),
    ("latest-ok-not-ready", "module-state", ("outputs", "decision_dispatcher.status"), "absent", "outputs.decision_dispatcher.status"),
    ("latest-ok-missing-output", "module-state", ("outputs", "decision_dispatcher.last_tick"), DELETE, "outputs.decision_dispatcher.last_tick"),
    ("latest-ok-bad-run-id", "module-state", ("run_id",), "apply-now", "run_id"),
]  # fmt: skip


def _mutate(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(document)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def test_table_is_large_enough() -> None:
    assert len(ROWS) >= 30
    assert len({row[0] for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("schema", sorted(BASES))
def test_bases_are_valid(schema: str) -> None:
    assert violations(schema, BASES[schema]) == []


@pytest.mark.parametrize(
    ("row", "schema", "path", "value", "expected"), ROWS, ids=[r[0] for r in ROWS]
)
def test_bad_document_is_rejected_naming_the_key(
    row: str, schema: str, path: tuple[Any, ...], value: Any, expected: str
) -> None:
    found = violations(schema, _mutate(BASES[schema], path, value), "doc")
    where = f"doc.{expected}" if expected else "doc"
    assert found, f"{row}: accepted"
    assert any(line.startswith(f"{where}:") for line in found), found
    assert all("\n" not in line for line in found)

"""The daemon's config parser: defaults, derived paths, and errors that name the key."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hyops_dispatcher.config import ConfigError

from .conftest import ROUTES
from .pure import config, route_over


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
    ({"routes": route_over("failback", supersedes="cutover")}, "routes.failback.supersedes: must"),
    (
        {"routes": route_over("failback", supersedes=["Cutover"])},
        "routes.failback.supersedes: must",
    ),
    (
        {"routes": route_over("failback", supersedes=["cutover", "cutover"])},
        "routes.failback.supersedes: must be a list of at most 16 distinct",
    ),
    (
        {"routes": route_over("failback", supersedes=["failback"])},
        "routes.failback.supersedes: a route cannot supersede itself",
    ),
    (
        {"routes": route_over("failback", supersedes=["cut-over"])},
        "routes.failback.supersedes: 'cut-over' is not a route; routes: cutover, failback",
    ),
]


def test_route_supersedes_is_declared_and_defaults_to_nothing() -> None:
    cfg = config(routes=route_over("failback", supersedes=["cutover"]))
    assert cfg.routes["failback"].supersedes == ("cutover",)
    assert cfg.routes["cutover"].supersedes == ()


@pytest.mark.parametrize(("over", "message"), CONFIG_ERRORS, ids=[m for _, m in CONFIG_ERRORS])
def test_config_errors_name_the_key(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**over)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_route_requires_approval_null_is_refused() -> None:
    # docs/INTERFACES.md "Module inputs": never null; the original treated null as "no approval".
    routes = copy.deepcopy(ROUTES)
    routes["cutover"]["requires_approval"] = None
    with pytest.raises(ConfigError, match=r"routes\.cutover\.requires_approval"):
        config(routes=routes)

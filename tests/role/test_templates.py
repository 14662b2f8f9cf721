"""The role's templates render to what the daemon and systemd expect (molecule runs them for real).

Rendered with plain Jinja2 plus stand-ins for the three Ansible filters they use, so these
tests need no Ansible run; the config is checked against the daemon's JSON Schema.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from referencing import Registry, Resource

from .rendering import DEFAULTS, REPO, ROUTES, render


def unit_directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def schema_validator() -> jsonschema.Draft202012Validator:
    schemas = {p.name: json.loads(p.read_text("utf-8")) for p in (REPO / "schemas").glob("*.json")}
    registry = Registry().with_resources(
        (name, Resource.from_contents(body)) for name, body in schemas.items()
    )
    registry = registry.with_resources(
        (body["$id"], Resource.from_contents(body)) for body in schemas.values() if "$id" in body
    )
    return jsonschema.Draft202012Validator(
        schemas["dispatcher-config.schema.json"], registry=registry
    )


def test_config_renders_valid_json_that_the_schema_accepts() -> None:
    config = json.loads(render("config.json.j2"))
    schema_validator().validate(config)
    assert config["routes"] == ROUTES
    assert config["root"] == DEFAULTS["decision_dispatcher_root"]
    assert config["decision_records_dir"] == DEFAULTS["decision_dispatcher_records_dir"]
    assert config["execution_mode"] == "record-only"
    assert config["approvals_dir"] == "/opt/hybridops/decision-consumer/state/approvals"
    assert config["metrics_textfile"] == "/opt/hybridops/decision-dispatcher/state/metrics.prom"


def test_config_names_an_explicit_metrics_textfile_and_approvals_dir() -> None:
    textfile = "/var/lib/prometheus/node-exporter/hyops_decision_dispatcher.prom"
    config = json.loads(
        render(
            "config.json.j2",
            decision_dispatcher_metrics_textfile=textfile,
            decision_dispatcher_approvals_dir="/srv/consumer/approvals",
        )
    )
    schema_validator().validate(config)
    assert config["metrics_textfile"] == textfile
    assert config["approvals_dir"] == "/srv/consumer/approvals"


def test_config_rendering_is_byte_stable() -> None:
    assert render("config.json.j2") == render("config.json.j2")


def test_config_types_survive_string_inputs() -> None:
    config = json.loads(render("config.json.j2", decision_dispatcher_poll_seconds="20"))
    assert config["poll_seconds"] == 20


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("RestartPreventExitStatus", "3"),
        ("Restart", "on-failure"),
        ("UMask", "0027"),
        ("PrivateNetwork", "yes"),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/opt/hybridops/decision-dispatcher"),
        ("User", "hyops-dispatcher"),
        ("WatchdogSec", "30"),
        ("StartLimitBurst", "5"),
    ],
)
def test_unit_sets(key: str, value: str) -> None:
    assert unit_directives(render("dispatcher.service.j2"))[key] == [value]


def test_unit_runs_the_installed_script_with_the_rendered_config() -> None:
    exec_start = unit_directives(render("dispatcher.service.j2"))["ExecStart"][0]
    assert exec_start.split() == [
        "/usr/bin/python3",
        "/usr/local/lib/hyops-decision-dispatcher/dispatcher.py",
        "--config",
        "/opt/hybridops/decision-dispatcher/config/config.json",
        "run",
    ]


def test_unit_backoff_directives_only_where_systemd_knows_them() -> None:
    old = unit_directives(render("dispatcher.service.j2"))
    new = unit_directives(
        render("dispatcher.service.j2", __decision_dispatcher_systemd_version=255)
    )
    assert "RestartSteps" not in old
    assert new["RestartSteps"] == ["6"]
    assert new["RestartMaxDelaySec"] == ["60"]


def test_unit_reads_records_and_approvals_only() -> None:
    assert unit_directives(render("dispatcher.service.j2"))["ReadOnlyPaths"] == [
        "-/opt/hybridops/decision-service/state/records",
        "-/opt/hybridops/decision-consumer/state/approvals",
    ]


@pytest.mark.parametrize(
    ("textfile", "writable"),
    [
        ("", ["/opt/hybridops/decision-dispatcher"]),
        (
            "/opt/hybridops/decision-dispatcher/metrics/d.prom",
            ["/opt/hybridops/decision-dispatcher"],
        ),
        (
            "/var/lib/prometheus/node-exporter/hyops_decision_dispatcher.prom",
            ["/opt/hybridops/decision-dispatcher", "-/var/lib/prometheus/node-exporter"],
        ),
        # A sibling that merely shares the root's name as a prefix is outside it.
        (
            "/opt/hybridops/decision-dispatcher-metrics/d.prom",
            ["/opt/hybridops/decision-dispatcher", "-/opt/hybridops/decision-dispatcher-metrics"],
        ),
    ],
)
def test_unit_may_write_the_metrics_folder_only_when_outside_the_root(
    textfile: str, writable: list[str]
) -> None:
    unit = render("dispatcher.service.j2", decision_dispatcher_metrics_textfile=textfile)
    assert unit_directives(unit)["ReadWritePaths"] == writable


def test_alert_rules_render_like_the_role_with_the_same_base_url_rule() -> None:
    """The role renders the rules with `[[ ]]` (Ansible's template variable_start_string/
    variable_end_string, configure.yml); scripts/render-alert-rules.py does the same, with
    the same base URL rule as the role's preflight."""
    import importlib
    import sys

    import yaml

    sys.path.insert(0, str(REPO / "scripts"))
    script = importlib.import_module("render-alert-rules")
    role_vars = yaml.safe_load((REPO / "roles/decision_dispatcher/vars/main.yml").read_text())
    assert role_vars["__decision_dispatcher_runbook_base_url_pattern"] == script.BASE_URL_RE.pattern
    tasks = yaml.safe_load((REPO / "roles/decision_dispatcher/tasks/configure.yml").read_text())
    (task,) = [
        t
        for t in tasks
        if t.get("ansible.builtin.template", {})
        .get("src", "")
        .startswith("decision-dispatcher.rules")
    ]
    args = task["ansible.builtin.template"]
    assert (args["variable_start_string"], args["variable_end_string"]) == ("[[", "]]")
    text = script.render("https://wiki.ops.test/dd/RUNBOOK.md")
    assert "[[" not in text and "{{ $labels.instance }}" in text

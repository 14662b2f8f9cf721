"""Cluster mode (decision_dispatcher_service_managed_by: cluster) renders a unit only the
cluster can start, on the shared mount, with everything else of the hardened unit unchanged;
the config is local to each host. tests/ha runs it for real under Pacemaker."""

from __future__ import annotations

import jinja2

from .rendering import DEFAULTS, ROLE_VARS, render

CLUSTER = {
    "decision_dispatcher_service_managed_by": "cluster",
    "decision_dispatcher_shared_mount": "/srv/hyops",
    "decision_dispatcher_root": "/srv/hyops/decision-dispatcher",
}


def sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[")]


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def test_default_mode_is_systemd_and_keeps_the_install_section() -> None:
    assert DEFAULTS["decision_dispatcher_service_managed_by"] == "systemd"
    unit = render("dispatcher.service.j2")
    assert sections(unit) == ["[Unit]", "[Service]", "[Install]"]
    assert "AssertPathIsMountPoint" not in unit


def test_cluster_unit_is_static_and_asserts_the_shared_mount() -> None:
    unit = render("dispatcher.service.j2", **CLUSTER)
    assert sections(unit) == ["[Unit]", "[Service]"]
    assert "WantedBy=multi-user.target" not in unit
    assert "AssertPathIsMountPoint=/srv/hyops" in directives(unit)


def test_cluster_unit_changes_nothing_else() -> None:
    plain = directives(
        render(
            "dispatcher.service.j2",
            **{**CLUSTER, "decision_dispatcher_service_managed_by": "systemd"},
        )
    )
    cluster = directives(render("dispatcher.service.j2", **CLUSTER))
    assert [d for d in cluster if d not in plain] == ["AssertPathIsMountPoint=/srv/hyops"]
    assert [d for d in plain if d not in cluster] == ["WantedBy=multi-user.target"]
    assert "PrivateNetwork=yes" in cluster and "IPAddressDeny=any" in cluster


def derived(name: str, **overrides: str) -> str:
    variables = {**DEFAULTS, **overrides}
    return jinja2.Environment().from_string(ROLE_VARS[name]).render(variables).strip()


def test_cluster_config_lives_on_a_local_path_not_the_shared_mount() -> None:
    assert (
        derived("__decision_dispatcher_config_dir") == "/opt/hybridops/decision-dispatcher/config"
    )
    local = derived("__decision_dispatcher_config_dir", **CLUSTER)
    assert local == "/etc/hyops-decision-dispatcher"
    assert not local.startswith(CLUSTER["decision_dispatcher_shared_mount"] + "/")
    assert derived("__decision_dispatcher_mount_prefix", **CLUSTER) == "/srv/hyops/"

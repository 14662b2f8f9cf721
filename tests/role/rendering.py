"""The role's templates rendered outside Ansible (plain Jinja2 plus stand-ins for the three
Ansible filters they use), and the daemon's own verdict on a rendered config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "decision_dispatcher"
DISPATCHER = ROLE / "files" / "dispatcher.py"
DEFAULTS: dict[str, Any] = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text("utf-8"))
# The role's derived variables (vars/main.yml), rendered in file order like Ansible would.
ROLE_VARS: dict[str, Any] = yaml.safe_load((ROLE / "vars" / "main.yml").read_text("utf-8"))
CONFIG_FILE = f"{DEFAULTS['decision_dispatcher_root']}/config/config.json"
ROUTES = {
    "cutover": {
        "target_kind": "blueprint",
        "target_ref": "dr/postgresql-ha-failover-gcp@v1",
        "target_env": "dr",
        "execution_plane": "runner-local",
        "requires_approval": False,
        "approval_ttl_seconds": 3600,
    }
}


def render(template: str, **overrides: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["bool"] = bool
    env.filters["to_nice_json"] = lambda v, indent=4, sort_keys=True: json.dumps(
        v, indent=indent, sort_keys=sort_keys
    )
    env.filters["dirname"] = os.path.dirname
    env.filters["basename"] = os.path.basename
    variables = {
        **DEFAULTS,
        "decision_dispatcher_routes": ROUTES,
        "ansible_managed": "managed by Ansible",
        "__decision_dispatcher_config_file": CONFIG_FILE,
        "__decision_dispatcher_systemd_version": 252,
        **overrides,
    }
    for name, value in ROLE_VARS.items():
        if name not in variables:
            is_template = isinstance(value, str) and "{{" in value
            variables[name] = env.from_string(value).render(variables) if is_template else value
    return env.get_template(template).render(variables)


def check_config_verdict(config_file: Path, **overrides: Any) -> tuple[int, str]:
    """(exit code, message after the file name) of `dispatcher.py check-config` on the
    config the role would render with these variables."""
    config_file.write_text(render("config.json.j2", **overrides), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-B", str(DISPATCHER), "--config", str(config_file), "check-config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.returncode, done.stderr.strip().split(f"{config_file}: ", 1)[-1]

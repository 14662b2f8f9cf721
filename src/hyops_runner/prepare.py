"""Everything that must hold before a run writes anything: the module, its inputs
(resolved and validated), the inventory, the jump host and the host key options."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import inventory, preflight, sshopts
from .errors import HyopsError, InputError
from .inputs import ResolvedInputs, resolve
from .modules import ModuleSpec, find_module
from .runtime import Layout
from .validate import input_problems

# ansible-playbook arguments per command (HybridOps' onprem-linux@v1.0 profile).
PLAYBOOK_ARGS = {"apply": (), "destroy": (), "plan": ("--check",), "validate": ("--syntax-check",)}


@dataclass
class Request:
    command: str
    module_ref: str
    root: Path
    inputs_file: str | None = None
    state_instance: str | None = None
    module_roots: list[str] = field(default_factory=list)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout_s: int | None = None


@dataclass
class Prepared:
    spec: ModuleSpec
    inputs: ResolvedInputs
    inventory_text: str
    hosts: list[inventory.Host]
    layout: Layout
    jump: sshopts.Jump | None


def prepare(req: Request) -> Prepared:
    """Module, inputs, validation and inventory: everything that must hold before a run."""
    spec = find_module(req.module_ref, req.module_roots)
    resolved = resolve(spec.defaults, req.inputs_file, req.environ)
    found = input_problems(spec.schema_dir, _lifecycle(req), resolved.values)
    if found:
        raise _blamed(req, resolved, found)
    if resolved.values.get("load_vault_env") is True:
        raise InputError(
            source_name(req),
            [
                "inputs.load_vault_env: true is not supported by this runner (HybridOps reads "
                "<root>/vault/bootstrap.vault.env); export the variables and set it to false"
            ],
        )
    layout = Layout(req.root, spec.module_ref, req.state_instance)
    try:
        sshopts.host_key_options(layout.known_hosts, write=True)
    except ValueError as exc:
        raise HyopsError(f"hyops: {exc}") from None
    try:
        jump = sshopts.jump_host(resolved.values, req.root)
        hosts = inventory.hosts(resolved.values)
        text = inventory.render(resolved.values, layout.known_hosts, jump)
    except (KeyError, TypeError, ValueError) as exc:
        message = str(exc)
        if not message.startswith("inputs."):
            message = f"inputs: cannot build the inventory ({type(exc).__name__}: {exc})"
        raise InputError(source_name(req), [message]) from None
    return Prepared(spec, resolved, text, hosts, layout, jump)


def _blamed(req: Request, resolved: ResolvedInputs, lines: list[str]) -> InputError:
    """The problems, blamed on what the user wrote: the environment variable that set
    the offending key (as the source when it set them all, else after the line)."""
    origins = [resolved.origin(_line_path(line)) for line in lines]
    if all(origins) and len(set(origins)) == 1:
        return InputError(str(origins[0]), lines)
    marked = [f"{ln} (from {o})" if o else ln for ln, o in zip(lines, origins, strict=True)]
    return InputError(source_name(req), marked)


def _line_path(line: str) -> tuple[str, ...]:
    """``inputs.a.b[0].c: ...`` -> ("a", "b", "0", "c")."""
    head = line.split(": ", 1)[0]
    if not head.startswith("inputs."):
        return ()
    return tuple(p for p in re.split(r"[.\[\]]+", head.removeprefix("inputs.")) if p)


def _lifecycle(req: Request) -> str:
    """The lifecycle whose input schema applies: preflight, plan and validate answer
    "would apply run?", so they check what apply checks."""
    return "destroy" if req.command == "destroy" else "apply"


def source_name(req: Request) -> str:
    return req.inputs_file or "module defaults + environment"


def probe_for(prep: Prepared, write_keys: bool, evidence: Path | None = None) -> preflight.Probe:
    keys = sshopts.host_key_options(prep.layout.known_hosts, write=write_keys)
    return preflight.Probe(keys, prep.jump, evidence)


def connectivity_checks(prep: Prepared, probe: preflight.Probe) -> list[preflight.Check]:
    if not prep.inputs.values.get("connectivity_check", True):
        return [preflight.Check("connectivity", "skip", "connectivity_check is false")]
    out: list[preflight.Check] = []
    seen: set[str] = set()
    for host in prep.hosts:
        if host.address in seen:  # HybridOps probes each address once
            continue
        seen.add(host.address)
        out += preflight.connectivity(host, prep.inputs.values, probe)
    return out

"""``hyops preflight`` and ``hyops validate``: checks that read and never write."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from . import playbook, preflight
from .errors import HyopsError, InputError
from .modules import ModuleSpec
from .prepare import PLAYBOOK_ARGS, Request, connectivity_checks, prepare, probe_for, source_name


def run_preflight(req: Request) -> tuple[list[preflight.Check], InputError | None]:
    """(checks, the input error if any). Reads only: no folder, state, evidence or key
    is written."""
    checks: list[preflight.Check] = []
    try:
        prep = prepare(req)
    except InputError as exc:
        return [preflight.Check("inputs", "fail", f"{len(exc.problems)} problem(s)")], exc
    checks.append(preflight.Check("inputs", "ok", f"valid ({source_name(req)})"))
    checks.append(_playbook_check(prep.spec, "apply"))
    checks += preflight.tools(prep.hosts)
    checks.append(preflight.root_check(req.root))
    checks.append(
        preflight.required_env(list(prep.inputs.values.get("required_env", [])), req.environ)
    )
    if prep.jump is not None and prep.jump.note:
        checks.append(preflight.Check("jump host", "ok", prep.jump.note))
    checks += connectivity_checks(prep, probe_for(prep, write_keys=False))
    return checks, None


def run_validate(req: Request) -> list[preflight.Check]:
    """Inputs, manifest, and ``--syntax-check`` of each playbook; writes nothing (the
    inventory for the check lives in a temporary folder)."""
    prep = prepare(req)  # inputs + manifest (execution keys) or InputError/HyopsError
    checks = [
        preflight.Check("inputs", "ok", f"valid ({source_name(req)})"),
        preflight.Check("manifest", "ok", str(prep.spec.manifest)),
    ]
    tool = playbook.find_tool("ansible-playbook")
    if tool is None:
        return [*checks, preflight.Check("tool ansible-playbook", "fail", "not found")]
    with tempfile.TemporaryDirectory(prefix="hyops-validate-") as tmp:
        inv = Path(tmp) / "inventory.yml"
        inv.write_text(prep.inventory_text, encoding="utf-8")
        for command in ("apply", "destroy"):
            path = prep.spec.playbook(command)
            argv = [tool, str(path), "-i", str(inv), *PLAYBOOK_ARGS["validate"]]
            env = playbook.ansible_env(prep.spec.directory, Path(tmp) / "events.jsonl")
            proc = _run_quiet(argv, env, path.parent)
            detail = str(path) if proc[0] == 0 else proc[1]
            checks.append(
                preflight.Check(f"syntax {command}", "ok" if proc[0] == 0 else "fail", detail)
            )
    return checks


def _run_quiet(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if "ERROR" in ln]
    return done.returncode, " ".join((lines or [f"exit {done.returncode}"])[0].split())[:300]


def _playbook_check(spec: ModuleSpec, command: str) -> preflight.Check:
    try:
        path = spec.playbook(command)
    except HyopsError as exc:
        return preflight.Check(f"playbook {command}", "fail", str(exc))
    ok = path.is_file()
    return preflight.Check(
        f"playbook {command}", "ok" if ok else "fail", str(path) if ok else f"missing: {path}"
    )

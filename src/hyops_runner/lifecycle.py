"""``hyops apply`` / ``hyops destroy`` / ``hyops preflight``: the order things happen in.

Nothing runs and no state changes until the inputs validate and the inventory renders.
Then, holding the slot lock: latest.json -> running, work and evidence files, preflight
(required env, connectivity), the playbook, outputs filtered to ``outputs.publish``,
latest.json -> ok/destroyed. Any failure after "running" leaves ``status: error`` with
``last_error`` and the previous outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import extravars, inventory, playbook, preflight, redact, state
from .errors import HyopsError, InputError
from .fsutil import atomic_write_bytes, atomic_write_json, atomic_write_yaml, tighten_tree
from .inputs import ResolvedInputs, resolve
from .lock import slot_lock
from .modules import ModuleSpec, find_module
from .runid import new_run_id, utc_now
from .runtime import Layout
from .validate import input_problems


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


def prepare(req: Request) -> Prepared:
    """Module, inputs, validation and inventory: everything that must hold before a run."""
    spec = find_module(req.module_ref, req.module_roots)
    resolved = resolve(spec.defaults, req.inputs_file, req.environ)
    found = input_problems(spec.schema_dir, _lifecycle(req), resolved.values)
    if found:
        raise InputError(_source(req), found)
    try:
        text = inventory.render(resolved.values)
        hosts = inventory.hosts(resolved.values)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(_source(req), [f"inputs: cannot build the inventory ({exc})"]) from None
    layout = Layout(req.root, spec.module_ref, req.state_instance)
    return Prepared(spec, resolved, text, hosts, layout)


def _lifecycle(req: Request) -> str:
    """The lifecycle command whose inputs and playbook are checked: preflight answers
    "would apply run?", so it checks what apply checks."""
    return "apply" if req.command == "preflight" else req.command


def _source(req: Request) -> str:
    return req.inputs_file or "module defaults + environment"


def run_preflight(req: Request) -> tuple[list[preflight.Check], list[str]]:
    """(checks, input problems). Input problems make the inputs check fail, not raise."""
    checks: list[preflight.Check] = []
    try:
        prep = prepare(req)
    except InputError as exc:
        return [preflight.Check("inputs", "fail", f"{len(exc.problems)} problem(s)")], exc.problems
    checks.append(preflight.Check("inputs", "ok", f"valid ({_source(req)})"))
    checks.append(_playbook_check(prep.spec, _lifecycle(req)))
    checks += preflight.tools(prep.hosts)
    checks.append(preflight.root_writable(req.root))
    checks.append(
        preflight.required_env(list(prep.inputs.values.get("required_env", [])), req.environ)
    )
    checks += _connectivity(prep)
    return checks, []


def _playbook_check(spec: ModuleSpec, command: str) -> preflight.Check:
    try:
        path = spec.playbook(command)
    except HyopsError as exc:
        return preflight.Check(f"playbook {command}", "fail", str(exc))
    ok = path.is_file()
    return preflight.Check(
        f"playbook {command}", "ok" if ok else "fail", str(path) if ok else f"missing: {path}"
    )


def _connectivity(prep: Prepared) -> list[preflight.Check]:
    if not prep.inputs.values.get("connectivity_check", True):
        return [preflight.Check("connectivity", "skip", "connectivity_check is false")]
    out: list[preflight.Check] = []
    for host in prep.hosts:
        out += preflight.connectivity(host, prep.inputs.values)
    return out


def run_lifecycle(req: Request, progress: TextIO | None = sys.stdout) -> dict[str, Any]:
    """Apply or destroy; returns the final state document or raises HyopsError."""
    prep = prepare(req)
    spec, layout = prep.spec, prep.layout
    playbook_path = spec.playbook(req.command)
    run_id = new_run_id(req.command)
    layout.prepare()
    with slot_lock(layout.lock_file, run_id):
        # Run folders only once the slot is ours: a run that loses the lock leaves nothing.
        layout.prepare(run_id)
        previous = state.read_state(layout.state_file)
        evidence = layout.evidence_dir(run_id)
        current = state.running(previous, spec, run_id, evidence)
        state.write_state(layout.state_file, current)
        started = utc_now()
        t0 = time.monotonic()
        report: dict[str, Any] = {
            "command": req.command,
            "module_ref": spec.module_ref,
            "run_id": run_id,
            "started_at": started.isoformat(),
        }
        try:
            final = _execute(req, prep, playbook_path, run_id, report, progress)
        except BaseException as exc:
            message = _one_line(exc)
            if isinstance(exc, KeyboardInterrupt):
                log = evidence / "ansible.stdout.log"
                message = f"interrupted (Ctrl-C or SIGTERM); the playbook was stopped (log: {log})"
            state.write_state(layout.state_file, state.failed(current, req.command, message))
            report.update(status="error", error=message)
            _finish_report(layout, run_id, report, t0)
            if isinstance(exc, HyopsError):
                raise HyopsError(f"hyops: {req.command} failed: {message}") from exc
            if isinstance(exc, KeyboardInterrupt):
                raise HyopsError(f"hyops: {req.command} interrupted; state says error") from exc
            raise
        state.write_state(layout.state_file, final)
        report.update(status=final["status"])
        _finish_report(layout, run_id, report, t0)
        return final


def _execute(
    req: Request,
    prep: Prepared,
    playbook_path: Path,
    run_id: str,
    report: dict[str, Any],
    progress: TextIO | None,
) -> dict[str, Any]:
    spec, layout, values = prep.spec, prep.layout, prep.inputs.values
    work, evidence = layout.work_dir(run_id), layout.evidence_dir(run_id)
    resolved_file = evidence / "resolved.inputs.yml"
    atomic_write_yaml(
        resolved_file, redact.masked(values), "# Resolved inputs of this run; secrets masked.\n"
    )
    inventory_file = work / "inventory.ini"
    atomic_write_bytes(inventory_file, prep.inventory_text.encode("utf-8"))
    outputs_file = work / "hyops.outputs.json"
    hyops_vars = {
        "hyops_outputs_file": str(outputs_file),
        "hyops_run_id": run_id,
        "hyops_runtime_root": str(layout.root),
        "hyops_module_ref": spec.module_ref,
        "hyops_lifecycle_command": req.command,
    }
    extravars_file = work / "hyops.inputs.yml"
    extravars.write(extravars_file, values, hyops_vars)

    env_names = values.get(
        "required_env_destroy" if req.command == "destroy" else "required_env", []
    )
    checks = [preflight.required_env(list(env_names), req.environ), *_connectivity(prep)]
    report["preflight"] = [c.as_dict() for c in checks]
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise HyopsError("preflight: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))

    if progress is not None:
        print(f"hyops {req.command} {spec.module_ref} run {run_id}", file=progress, flush=True)
    result = playbook.run(
        playbook_path,
        inventory_file,
        extravars_file,
        work,
        evidence,
        spec.directory,
        progress,
        timeout_s=req.timeout_s or None,
    )
    report["playbook"] = {"path": str(playbook_path), "returncode": result.returncode}
    if result.returncode != 0:
        report["failed_task"] = result.first_failure()
        raise HyopsError(_playbook_error(result))

    raw = _read_outputs(outputs_file)
    report["outputs_written"] = raw
    outputs, missing = state.publish(raw, spec.publish)
    report["outputs_published"] = outputs
    if req.command == "destroy":
        return state.succeeded_destroy(spec, run_id, evidence)
    if missing:
        raise HyopsError(
            f"playbook did not write published output(s) {', '.join(missing)} to {outputs_file}"
        )
    clean, notes = redact.rerun_inputs(values, prep.inputs.from_env)
    header = "# Inputs to re-run this module with (hyops apply --inputs THIS_FILE).\n"
    atomic_write_yaml(layout.rerun_inputs_file, clean, header + "".join(n + "\n" for n in notes))
    return state.succeeded_apply(
        spec, run_id, evidence, outputs, layout.rerun_inputs_file, resolved_file
    )


def _read_outputs(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HyopsError(f"the playbook wrote no outputs file ({path})") from None
    except (OSError, ValueError) as exc:
        raise HyopsError(f"outputs file {path} is not JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise HyopsError(f"outputs file {path} must hold a JSON object")
    return doc


def _playbook_error(result: playbook.PlaybookResult) -> str:
    failure = result.first_failure()
    log = result.stdout_log
    if failure:
        what = "unreachable" if failure.get("status") == "unreachable" else "failed"
        msg = f": {failure['msg']}" if failure.get("msg") else ""
        return f"task '{failure.get('task')}' {what} on {failure.get('host')}{msg} (log: {log})"
    tail = _last_line(result.stderr_log) or f"exit code {result.returncode}"
    return f"ansible-playbook exited {result.returncode}: {tail} (log: {log})"


def _last_line(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    lines = [
        ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
    ]
    for line in reversed(lines):
        if "ERROR" in line:
            return " ".join(line.split())[:300]
    return " ".join(lines[-1].split())[:300] if lines else ""


def _finish_report(layout: Layout, run_id: str, report: dict[str, Any], t0: float) -> None:
    evidence = layout.evidence_dir(run_id)
    # The destroy archive and anything else the playbook put here came with its umask.
    with contextlib.suppress(OSError):
        tighten_tree(evidence)
        tighten_tree(layout.work_dir(run_id))
    report["finished_at"] = utc_now().isoformat()
    report["duration_s"] = round(time.monotonic() - t0, 3)
    # The state file already says what happened; this evidence copy is best effort.
    with contextlib.suppress(OSError):
        atomic_write_json(evidence / "result.json", report)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("hyops: "):
        text = text[len("hyops: ") :]
    return " ".join(text.split()) or type(exc).__name__

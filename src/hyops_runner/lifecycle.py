"""``hyops apply|plan|destroy``: the order things happen in (checks.py: preflight, validate).

Nothing is written until the inputs validate, the inventory renders and the runtime
root passes its check. Then, holding the slot lock (HybridOps' order, docs/RUNNER.md):
evidence (meta, inputs), work files, preflight (required env, connectivity) -- a
failing preflight writes no state --, then for apply the rerun inputs file and
``status: running``, the playbook, outputs filtered to ``outputs.publish``, and
``ok``/``destroyed``. A failure after ``running`` (playbook, interrupt, any unexpected
error) leaves ``status: error``; a failing destroy or plan writes no state.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from . import extravars, playbook, preflight, redact, state
from .errors import HyopsError
from .evidence import REPORT, Evidence
from .fsutil import atomic_write_bytes, atomic_write_json, atomic_write_yaml, tighten_tree
from .lock import slot_lock
from .modules import ModuleSpec
from .prepare import PLAYBOOK_ARGS, Prepared, Request, connectivity_checks, prepare, probe_for
from .runid import new_run_id, utc_now
from .runtime import check_root

__all__ = ["HyopsError", "Request", "run_lifecycle"]


def _stack_dir(spec: ModuleSpec) -> Path | None:
    """The pack's stack folder when the package ships one: HybridOps' working folder."""
    pack = spec.execution.get("pack_id", "")
    stack = spec.directory / "packs" / "config" / "ansible" / pack / "stack"
    return stack if pack and stack.is_dir() else None


class _Run:
    """One apply/plan/destroy after the lock is held; see the module docstring."""

    def __init__(self, req: Request, prep: Prepared, run_id: str, progress: TextIO | None):
        self.req, self.prep, self.run_id, self.progress = req, prep, run_id, progress
        self.layout = prep.layout
        self.ev = Evidence(self.layout.evidence_dir(run_id), prep.spec, req.command, run_id)
        self.work = self.layout.work_dir(run_id)
        self.files = state.RunFiles(
            req.command,
            run_id,
            self.ev.dir,
            self.layout.rerun_inputs_file,
            self.ev.dir / "resolved.inputs.yml",
            req.state_instance,
        )
        self.current: dict[str, Any] | None = None  # the running document, once written
        self.report: dict[str, Any] = {
            "command": req.command,
            "module_ref": prep.spec.module_ref,
            "run_id": run_id,
            "started_at": utc_now().isoformat(),
        }

    # -- phases -------------------------------------------------------------------------

    def start(self) -> tuple[Path, Path, Path]:
        values, spec = self.prep.inputs.values, self.prep.spec
        inventory_file = self.work / "inventory.yml"
        outputs_file = self.work / "hyops.outputs.json"
        extravars_file = self.work / "hyops.inputs.yml"
        stack = _stack_dir(spec)
        jump = self.prep.jump
        self.ev.write_json(
            "meta.json",
            {
                "command": self.req.command,
                "driver": spec.execution["driver"],
                "inputs_file": str(extravars_file),
                "inventory": str(inventory_file),
                "module_ref": spec.module_ref,
                "outputs_file": str(outputs_file),
                "pack_id": spec.execution["pack_id"],
                "pack_stack": str(stack or ""),
                "playbook": {"file": str(spec.playbook(self.req.command)), "note": ""},
                "profile": spec.execution["profile"],
                "proxy_jump": {
                    "auto_enabled": bool(values.get("ssh_proxy_jump_auto")),
                    "auto_note": jump.note if jump else "",
                    "host": jump.host if jump else "",
                    "port": jump.port if jump else int(values.get("ssh_proxy_jump_port") or 22),
                    "user": jump.user if jump else str(values.get("ssh_proxy_jump_user") or ""),
                },
                "required_credentials": list(spec.credentials),
                "required_env": list(values.get(self._env_key(), [])),
                "run_id": self.run_id,
                "ssh_key": {"file": str(values.get("ssh_private_key_file") or "")},
                "known_hosts": str(self.layout.known_hosts),
                "workdir": str(self.work),
            },
        )
        self.ev.preflight_decision(None)
        self.ev.inputs(values, self.req.state_instance)
        atomic_write_bytes(inventory_file, self.prep.inventory_text.encode("utf-8"))
        hyops_vars = {
            "hyops_outputs_file": str(outputs_file),
            "hyops_run_id": self.run_id,
            "hyops_runtime_root": str(self.layout.root),
            "hyops_module_ref": spec.module_ref,
            "hyops_lifecycle_command": self.req.command,
        }
        # HybridOps passes become/become_user only through the inventory.
        playbook_vars = {k: v for k, v in values.items() if k not in ("become", "become_user")}
        extravars.write(extravars_file, playbook_vars, hyops_vars)
        return inventory_file, extravars_file, outputs_file

    def _env_key(self) -> str:
        return "required_env_destroy" if self.req.command == "destroy" else "required_env"

    def preflight(self) -> None:
        """Required env and connectivity; a failure raises before any state is written."""
        values = self.prep.inputs.values
        checks = [preflight.required_env(list(values.get(self._env_key(), [])), self.req.environ)]
        probe = probe_for(self.prep, write_keys=True, evidence=self.ev.dir)
        checks += connectivity_checks(self.prep, probe)
        self.report["preflight"] = [c.as_dict() for c in checks]
        failed = [c for c in checks if c.status == "fail"]
        error = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        warnings = [self.prep.jump.note] if self.prep.jump and self.prep.jump.note else []
        result = self.ev.driver_result(
            "error" if failed else "ok", error, command="preflight", warnings=warnings
        )
        self.ev.write_json("preflight_result.json", result)
        self.ev.preflight_decision(not failed, error)
        if failed:
            self.ev.write_json("driver_result.json", result)
            raise PreflightFailed(f"preflight: {error} (run record: {self.ev.dir})")

    def mark_running(self) -> None:
        """apply only: the rerun file, the resolved inputs and ``status: running``."""
        values = self.prep.inputs.values
        self._write_rerun(self.layout.rerun_inputs_file, RERUN_HEADER)
        self.ev.resolved_inputs(values)
        previous = state.read_state(self.layout.state_file)
        self.current = state.running(previous, self.prep.spec, self.files)
        state.write_state(self.layout.state_file, self.current)
        detail = f"{self.req.command} started but has not completed"
        self._module_state([], "running", detail)

    def _write_rerun(self, path: Path, header: str) -> None:
        clean, notes = redact.rerun_inputs(self.prep.inputs.values, self.prep.inputs.from_env)
        text = header + "".join(n + "\n" for n in notes)
        atomic_write_yaml(path, clean, text, sort_keys=False)

    def _module_state(self, published: list[str], status: str | None, detail: str = "") -> None:
        apply = self.req.command == "apply"
        self.ev.module_state(
            self.layout.state_file,
            self.files.rerun_inputs_file if apply else None,
            self.files.resolved_inputs_file if apply else None,
            published,
            status,
            detail,
        )

    def playbook(self, inventory_file: Path, extravars_file: Path) -> None:
        spec, command = self.prep.spec, self.req.command
        if self.progress is not None:
            print(f"hyops {command} {spec.module_ref} run {self.run_id}", file=self.progress)
        path = spec.playbook(command)
        result = playbook.run(
            path,
            inventory_file,
            extravars_file,
            _stack_dir(spec) or self.work,
            self.ev.dir,
            spec.directory,
            self.progress,
            command=command,
            extra_args=PLAYBOOK_ARGS[command],
            timeout_s=self.req.timeout_s or None,
        )
        self.report["playbook"] = {"path": str(path), "returncode": result.returncode}
        if result.returncode != 0:
            self.report["failed_task"] = result.first_failure()
            raise PlaybookFailed(
                f"ansible {command} failed (open: {result.log})", _playbook_detail(result)
            )

    def finish(self, outputs_file: Path) -> dict[str, Any]:
        spec, command = self.prep.spec, self.req.command
        raw = _read_outputs(outputs_file) if command != "plan" else {}
        self.report["outputs_written"] = raw
        outputs, missing = state.publish(raw, spec.publish)
        self.report["outputs_published"] = outputs
        if command == "apply" and missing:
            raise HyopsError(
                f"playbook did not write published output(s) {', '.join(missing)} to {outputs_file}"
            )
        normalized = {"command": command, "published_outputs": raw, "workdir": str(self.work)}
        result = self.ev.driver_result("ok", outputs=normalized)
        self.ev.write_json("driver_result.json", result)
        self.ev.write_json("result.json", result)
        if command == "plan":  # check mode: no state, no rerun file (HybridOps alike)
            return {"command": "plan", "evidence_dir": str(self.ev.dir), "run_id": self.run_id,
                    "status": "ok"}  # fmt: skip
        if command == "destroy":
            final = state.succeeded_destroy(spec, self.files)
        else:
            self._write_rerun(self.layout.rerun_inputs_file, RERUN_HEADER)
            self._write_rerun(self.layout.good_inputs_file, GOOD_HEADER)
            self.ev.resolved_inputs(self.prep.inputs.values)
            final = state.succeeded_apply(spec, self.files, outputs)
        state.write_state(self.layout.state_file, final)
        self._module_state(list(outputs) if command == "apply" else [], None)
        return final

    def fail(self, exc: BaseException) -> str:
        """Record a failure; returns the one-line message for the operator."""
        command = self.req.command
        if isinstance(exc, PlaybookFailed):
            last_error, shown = exc.last_error, f"{exc.detail}; {exc.last_error}"
        elif isinstance(exc, KeyboardInterrupt):
            last_error = f"cancelled after {command} started (Ctrl-C or SIGTERM); playbook stopped"
            shown = last_error
        else:
            last_error = shown = _one_line(exc)
        result = self.ev.driver_result("error", last_error)
        with contextlib.suppress(OSError):
            if not isinstance(exc, PreflightFailed):  # preflight wrote its own, as HybridOps
                self.ev.write_json("driver_result.json", result)
            if self.report.get("playbook"):
                self.ev.write_json("result.json", result)
        if self.current is not None:  # apply got as far as "running": never leave it there
            state.write_state(
                self.layout.state_file, state.failed(self.current, command, last_error)
            )
            with contextlib.suppress(OSError):
                self._module_state([], "error", last_error)
        self.report.update(status="error", error=shown)
        return shown

    def close(self, t0: float, status: str) -> None:
        self.report.setdefault("status", status)
        # The destroy archive and anything else the playbook put here came with its umask.
        with contextlib.suppress(OSError):
            tighten_tree(self.ev.dir)
            tighten_tree(self.work)
        self.report["finished_at"] = utc_now().isoformat()
        self.report["duration_s"] = round(time.monotonic() - t0, 3)
        # The state file already says what happened; this report is best effort.
        with contextlib.suppress(OSError):
            atomic_write_json(self.ev.dir / REPORT, self.report)


RERUN_HEADER = (
    "# Inputs of the last apply of this module, written when it started (as HybridOps\n"
    "# does), secrets removed. Re-run: hyops apply --inputs THIS_FILE. After a failed\n"
    "# apply, roll back with latest.last-good.inputs.yml next to this file instead.\n"
)
GOOD_HEADER = (
    "# Inputs of the last successful apply of this module, secrets removed.\n"
    "# Roll back: hyops apply --inputs THIS_FILE (see docs/RUNBOOK.md, Rollback).\n"
)


class PreflightFailed(HyopsError):
    """Required env or connectivity failed: nothing ran, no state is written."""


class PlaybookFailed(HyopsError):
    def __init__(self, last_error: str, detail: str) -> None:
        super().__init__(last_error)
        self.last_error = last_error
        self.detail = detail


def run_lifecycle(req: Request, progress: TextIO | None = sys.stdout) -> dict[str, Any]:
    """Apply, plan or destroy; the final state document (a run summary for plan)."""
    prep = prepare(req)
    layout = prep.layout
    check_root(layout.root)
    run_id = new_run_id(req.command)
    layout.prepare()
    with slot_lock(layout.lock_file, run_id):
        # Run folders only once the slot is ours: a run that loses the lock leaves nothing.
        layout.prepare(run_id)
        run = _Run(req, prep, run_id, progress)
        t0 = time.monotonic()
        try:
            inventory_file, extravars_file, outputs_file = run.start()
            run.preflight()
            if req.command == "apply":
                run.mark_running()
            run.playbook(inventory_file, extravars_file)
            final = run.finish(outputs_file)
        except BaseException as exc:
            message = run.fail(exc)
            run.close(t0, "error")
            if isinstance(exc, KeyboardInterrupt):
                raise HyopsError(f"hyops: {req.command} interrupted: {message}") from exc
            raise HyopsError(f"hyops: {req.command} failed: {message}") from exc
        run.close(t0, final["status"])
        return final


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


def _playbook_detail(result: playbook.PlaybookResult) -> str:
    failure = result.first_failure()
    if failure:
        what = "unreachable" if failure.get("status") == "unreachable" else "failed"
        msg = f": {failure['msg']}" if failure.get("msg") else ""
        return f"task '{failure.get('task')}' {what} on {failure.get('host')}{msg}"
    tail = _last_line(result.stderr_log) or f"exit code {result.returncode}"
    return f"ansible-playbook exited {result.returncode}: {tail}"


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


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("hyops: "):
        text = text[len("hyops: ") :]
    return " ".join(text.split()) or type(exc).__name__

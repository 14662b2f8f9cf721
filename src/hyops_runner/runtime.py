"""Where a run keeps its files: runtime root resolution and the folder layout under it.

Root precedence (docs/RUNNER.md, RUNBOOK.md "Notes"): ``--root`` > ``$HYOPS_RUNTIME_ROOT`` >
``--env``/``$HYOPS_ENV`` -> ``~/.hybridops/envs/<env>``. Every folder created is 0700.
An existing root is never chmod-ed: one that another user owns, or that others may
write to, is refused (they could swap state, inventory or known_hosts under a run).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import HyopsError, UsageError
from .fsutil import ensure_private_dir

ENV_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$")
INSTANCE_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")


def check_env_name(name: str) -> str:
    if not ENV_NAME_RE.match(name):
        raise UsageError(
            f"hyops: invalid env name {name!r}: use 1-64 of letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def resolve_root(
    root: str | None, env_name: str | None, environ: Mapping[str, str] | None = None
) -> Path:
    """The runtime root for this invocation; raises UsageError when nothing names one."""
    environ = os.environ if environ is None else environ
    if root:
        return Path(root).expanduser().absolute()
    if environ.get("HYOPS_RUNTIME_ROOT"):
        return Path(environ["HYOPS_RUNTIME_ROOT"]).expanduser().absolute()
    name = env_name or environ.get("HYOPS_ENV")
    if not name:
        raise UsageError(
            "hyops: no runtime root: pass --env NAME (or --root DIR, or set HYOPS_ENV / "
            "HYOPS_RUNTIME_ROOT)"
        )
    check_env_name(name)
    home = Path(environ.get("HOME") or Path.home())
    return home / ".hybridops" / "envs" / name


def root_problem(root: Path) -> str | None:
    """Why ``root`` may not be used as it is, or None (also when it does not exist yet)."""
    try:
        st = root.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return f"hyops: runtime root {root} is not a folder"
    if st.st_uid != os.geteuid():
        return (
            f"hyops: runtime root {root} is owned by uid {st.st_uid}, not by you "
            f"(uid {os.geteuid()}); use a root of your own (--root or --env)"
        )
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        return (
            f"hyops: runtime root {root} is writable by group or others (mode {mode:04o}); "
            f"fix it with: chmod go-w {root}"
        )
    return None


def check_root(root: Path) -> None:
    problem = root_problem(root)
    if problem:
        raise HyopsError(problem)


def module_id(module_ref: str) -> str:
    return module_ref.replace("/", "__")


@dataclass(frozen=True)
class Layout:
    """Paths of one module state slot under one runtime root."""

    root: Path
    module_ref: str
    state_instance: str | None = None

    @property
    def module_id(self) -> str:
        return module_id(self.module_ref)

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "modules" / self.module_id

    def _slot_file(self, folder: Path, suffix: str) -> Path:
        """``folder/latest<suffix>``, or ``folder/instances/<instance><suffix>``."""
        if self.state_instance:
            return folder / "instances" / f"{self.state_instance}{suffix}"
        return folder / f"latest{suffix}"

    @property
    def state_file(self) -> Path:
        return self._slot_file(self.state_dir, ".json")

    @property
    def lock_file(self) -> Path:
        # Next to the state file, named after the slot: one lock per latest/instance.
        return self.state_file.with_name(f".{self.state_file.stem}.lock")

    @property
    def config_dir(self) -> Path:
        return self.root / "config" / "modules" / self.module_id

    @property
    def rerun_inputs_file(self) -> Path:
        return self._slot_file(self.config_dir, ".inputs.yml")

    def work_dir(self, run_id: str) -> Path:
        return self.root / "work" / self.module_id / run_id

    @property
    def good_inputs_file(self) -> Path:
        """The inputs of the last successful apply (rollback); latest.inputs.yml holds the
        inputs of the last apply that started, as HybridOps writes it."""
        return self._slot_file(self.config_dir, ".last-good.inputs.yml")

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    def evidence_dir(self, run_id: str) -> Path:
        return self.root / "logs" / "module" / self.module_id / run_id

    def prepare(self, run_id: str | None = None) -> None:
        """Create the slot's folders (and a run's work/evidence folders) as 0700; an
        existing root is checked, never changed."""
        check_root(self.root)
        if not self.root.exists():
            ensure_private_dir(self.root)
        for top in ("config", "work", "logs", "state", "ssh"):
            ensure_private_dir(self.root / top)
        for folder in (self.state_file.parent, self.rerun_inputs_file.parent):
            _private_chain(self.root, folder)
        if run_id:
            _private_chain(self.root, self.work_dir(run_id))
            _private_chain(self.root, self.evidence_dir(run_id))


def check_instance_name(name: str) -> str:
    if not INSTANCE_NAME_RE.match(name):
        raise UsageError(
            f"hyops: invalid --state-instance {name!r}: use 1-64 of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def _private_chain(root: Path, folder: Path) -> None:
    """0700 on every folder from ``root`` down to ``folder`` (mkdir -p leaves umask modes)."""
    rel = folder.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        ensure_private_dir(current)

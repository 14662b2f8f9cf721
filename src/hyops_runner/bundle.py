"""Stage the module package as plain files for a wheel (``pip install .``).

A wheel cannot hold symlinks, so the layout is rebuilt with copies under
``hyops_runner/package/``:

- ``modules/<ref>/``: the whole module (``spec.yml`` and ``module.yml``, ``schemas/``,
  ``playbooks/``, ``roles/``, ``files/``); this runner's default module root.
- ``packs/config/ansible/<pack id>/``: ``module.yml`` and ``stack/`` with
  ``playbook.yml``, ``destroy.playbook.yml`` and the ``vars/``, ``tasks/``, ``roles/``
  they use, so HybridOps' ``HYOPS_PACKS_ROOT`` works from an installed copy too.

Standard library only: setup.py runs it in a bare build environment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MODULE_REF = "platform/network/decision-dispatcher"
MODULE_PARTS = ("schemas", "playbooks", "roles", "files")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def pack_ids(repo: Path) -> list[str]:
    base = repo / "packs" / "config" / "ansible"
    return sorted(str(s.parent.relative_to(base)) for s in base.glob("**/stack") if s.is_dir())


def stage(repo: Path, dest: Path) -> None:
    """Copy the package from checkout ``repo`` into ``dest`` (symlinks followed)."""
    if dest.exists():
        shutil.rmtree(dest)
    module = dest / "modules" / MODULE_REF
    module.mkdir(parents=True)
    for name in ("module.yml", "spec.yml"):
        shutil.copyfile(repo / "module.yml", module / name)
    for part in MODULE_PARTS:
        shutil.copytree(repo / part, module / part, ignore=IGNORE)
    for pack_id in pack_ids(repo):
        pack = dest / "packs" / "config" / "ansible" / pack_id
        stack = pack / "stack"
        stack.mkdir(parents=True)
        # playbooks read {{ playbook_dir }}/../module.yml
        shutil.copyfile(repo / "module.yml", pack / "module.yml")
        for name in ("playbook.yml", "destroy.playbook.yml"):
            shutil.copyfile((repo / "packs" / "config" / "ansible" / pack_id / "stack" / name)
                            .resolve(), stack / name)  # fmt: skip
        for part in ("vars", "tasks", "roles"):
            shutil.copytree(repo / "playbooks" / part, stack / part, ignore=IGNORE)

"""Where the module package's own files live (manifest, schemas, playbooks, module root).

In a checkout (and an editable install) that is the checkout; in a wheel installed with
``pip install .`` it is the copy under ``hyops_runner/package/`` (see bundle.py).
"""

from __future__ import annotations

from pathlib import Path

MODULE_REF = "platform/network/decision-dispatcher"
MANIFEST = "module.yml"
_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parents[1]
_INSTALLED = _HERE / "package"


def module_dir() -> Path:
    """The folder holding module.yml (and schemas/, playbooks/ next to it)."""
    if (_CHECKOUT / MANIFEST).is_file():
        return _CHECKOUT
    return _INSTALLED / "modules" / MODULE_REF


def modules_root() -> Path:
    """What ``--module-root`` defaults to: ``<package>/modules`` (HybridOps' layout)."""
    if (_CHECKOUT / MANIFEST).is_file():
        return _CHECKOUT / "modules"
    return _INSTALLED / "modules"


def packs_root() -> Path:
    """``<package>/packs``: what HybridOps' ``HYOPS_PACKS_ROOT`` should name."""
    if (_CHECKOUT / MANIFEST).is_file():
        return _CHECKOUT / "packs"
    return _INSTALLED / "packs"


def schema_dir() -> Path:
    return module_dir() / "schemas"

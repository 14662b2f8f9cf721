"""Keep secrets out of the files a run leaves behind.

Policy (documented in docs/RUNNER.md):
- A key whose name says it holds a secret (anything with ``pass`` in it, as in
  ``ansible_become_pass``, ``ansible_ssh_pass``, ``passwd``, ``vault_password``; secret,
  token, api key, private key, credential) is a secret at any depth, unless the name
  ends in ``_file``, ``_path``, ``_dir`` or ``_ref``: those hold where a secret is, not
  the secret, and a re-run needs them (``ssh_private_key_file`` stays).
- A string value that is key material (a PEM block, an Ansible Vault blob) is a secret
  whatever its key.
- A value that reached the inputs only through ``HYOPS_INPUTS_JSON``/``HYOPS_INPUT_*``
  is treated the same way: kept when it is not a secret by the two rules above, because
  re-running without it would give a different result; dropped when it is.
The rerun file drops secrets (its header names each removed path and the variable to
supply it with); the evidence copy of the inputs masks them with ``REDACTED``.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_NAME_RE = re.compile(
    r"(^|_)(password|passwd|passphrase|secret|secrets|token|api_?key|private_?key|"
    r"credential|credentials)(_|$)",
    re.IGNORECASE,
)
LOCATION_SUFFIXES = ("_file", "_path", "_dir", "_ref")
SECRET_VALUE_RE = re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----|^\$ANSIBLE_VAULT;")
MASK = "REDACTED"

Path_ = tuple[str, ...]


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered.endswith(LOCATION_SUFFIXES):
        return False
    # Ansible's own names are short (ansible_become_pass, ansible_sudo_pass): any "pass".
    return "pass" in lowered or bool(SECRET_NAME_RE.search(lowered))


def is_secret_path(parts: tuple[object, ...] | list[object]) -> bool:
    """True when any key on the path names a secret: its value must not be printed."""
    return any(isinstance(p, str) and is_secret_name(p) for p in parts)


def is_secret_value(value: Any) -> bool:
    return isinstance(value, str) and bool(SECRET_VALUE_RE.search(value))


def _strip(doc: Any, path: Path_, replace: Any, drop: bool, found: list[Path_]) -> Any:
    """A copy of ``doc`` with each secret replaced (or dropped); its paths go to ``found``."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            here = (*path, str(key))
            if is_secret_name(str(key)) or is_secret_value(value):
                found.append(here)
                if not drop:
                    out[key] = replace
            else:
                out[key] = _strip(value, here, replace, drop, found)
        return out
    if isinstance(doc, list):
        items = []
        for i, value in enumerate(doc):
            here = (*path, str(i))
            if is_secret_value(value):
                found.append(here)
                if not drop:
                    items.append(replace)
            else:
                items.append(_strip(value, here, replace, drop, found))
        return items
    return doc


def masked(doc: Any) -> Any:
    """A copy with every secret value replaced by ``REDACTED`` (for evidence files)."""
    return _strip(doc, (), MASK, drop=False, found=[])


def rerun_inputs(
    doc: dict[str, Any], from_env: set[Path_] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """(copy without secrets, header comment lines naming what was removed and which
    kept values came from the environment rather than the inputs file)."""
    removed: list[Path_] = []
    clean = _strip(doc, (), None, drop=True, found=removed)
    notes = [f"# removed secret: {'.'.join(p)} ({_resupply(p)})" for p in removed]
    for path in sorted(from_env or ()):
        if not any(path[: len(r)] == r for r in removed):
            notes.append(f"# kept from the environment of the run: {'.'.join(path)}")
    return clean, notes


def _resupply(path: Path_) -> str:
    var = f"HYOPS_INPUT_{'__'.join(path).upper()}"
    if any(part.isdigit() for part in path):
        # A list cannot be merged item by item from a file; the runner's env path can.
        return (
            f"with this runner: {var}=VALUE, numbers index the list; with either CLI: "
            "add it back in the inputs file"
        )
    return f"supply it again with {var}=VALUE, or add it back in the inputs file"

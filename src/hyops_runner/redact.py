"""Keep secrets out of the files a run leaves behind.

Policy (documented in docs/RUNNER.md):
- A key whose name says it holds a secret (anything with ``pass`` in it, as in
  ``ansible_become_pass``, ``ansible_ssh_pass``, ``passwd``, ``vault_password``; secret,
  token, api key, private key, credential) is a secret at any depth, unless the name
  ends in ``_file``, ``_path``, ``_dir`` or ``_ref``: those hold where a secret is, not
  the secret, and a re-run needs them (``ssh_private_key_file`` stays).
- A string value that is key material (a PEM block, an OpenSSH key body, a PuTTY key,
  an Ansible Vault blob) is a secret whatever its key.
- A value that reached the inputs only through ``HYOPS_INPUTS_JSON``/``HYOPS_INPUT_*``
  is treated the same way: kept when it is not a secret by the two rules above, because
  re-running without it would give a different result; dropped when it is.
The rerun file drops secrets (its header names each removed path and the variable to
supply it with); the evidence copy of the inputs masks them with ``REDACTED``.
No message shows a value that holds key material: the writers of messages describe it
(``describe``), and ``scrub`` is the last guard on every line hyops prints.
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
# Where key material starts, in a raw value and in its repr()/JSON form alike: a PEM
# header, the base64 of "openssh-key-v1" (a key body pasted without its header), a
# PuTTY key file, an Ansible Vault blob.
KEY_MATERIAL_RE = re.compile(
    r"-----BEGIN [A-Z0-9 ]*(PRIVATE KEY|CERTIFICATE)[A-Z ]*-----|b3BlbnNzaC1rZXktdjE|"
    r"PuTTY-User-Key-File-|\$ANSIBLE_VAULT;"
)
# In a message: from the start of key material to its PEM end line, else to the end of
# the quoted value (or of the text). Hiding too much is the safe side.
_KEY_IN_TEXT_RE = re.compile(
    rf"(?:{KEY_MATERIAL_RE.pattern})(?:(?s:.*?)-----END [A-Z0-9 ]*-----|[^'\"]*)"
)
KEY_HIDDEN = "<key material hidden>"
MASK = "REDACTED"
MAX_WALK = 10_000  # values looked at by holds_key_material

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
    return isinstance(value, str) and bool(KEY_MATERIAL_RE.search(value))


def holds_key_material(value: Any) -> bool:
    """True when ``value`` or any string inside it (keys included) is key material."""
    todo, seen = [value], 0
    while todo and seen < MAX_WALK:
        item = todo.pop()
        seen += 1
        if isinstance(item, str) and KEY_MATERIAL_RE.search(item):
            return True
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return False


def scrub(text: str) -> str:
    """``text`` with any key material in it replaced by ``<key material hidden>``."""
    return _KEY_IN_TEXT_RE.sub(KEY_HIDDEN, text) if KEY_MATERIAL_RE.search(text) else text


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

"""The code that runs: its version, the digest of its sources and the release folder it was
loaded from (the role installs `<lib>/releases/<version>-<digest>/` behind a `current` link).

Invariant: the digest covers every source file of a release (the entry point and each
module of the package) by name and content, in one order, so the controller (`version
--json` on the checkout) and the host (state.json, `status`) name the same code with the
same digest; it is taken once, when the code is first asked, i.e. as it was loaded.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

from .ids import sha256
from .states import VERSION

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The entry point puts its own (real) folder first on sys.path, so this is the release.
RELEASE_DIR = os.path.dirname(PACKAGE_DIR)
ENTRY_POINT = "dispatcher.py"
PACKAGE = os.path.basename(PACKAGE_DIR)

_RUNNING: Optional[Dict[str, str]] = None


def source_files(release_dir: str) -> List[str]:
    """The release's source files, relative to it, in digest order."""
    names = sorted(
        f"{PACKAGE}/{name}"
        for name in os.listdir(os.path.join(release_dir, PACKAGE))
        if name.endswith(".py") and not name.startswith(".")
    )
    if os.path.isfile(os.path.join(release_dir, ENTRY_POINT)):
        names.insert(0, ENTRY_POINT)
    return names


def code_digest(release_dir: str) -> str:
    """16 hex digits of sha256 over (name, size, bytes) of every source file."""
    digest = sha256()
    for name in source_files(release_dir):
        with open(os.path.join(release_dir, name), "rb") as fh:
            data = fh.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def running() -> Dict[str, str]:
    """Version, digest, release folder and Python of the code in this process."""
    global _RUNNING
    if _RUNNING is None:
        digest = code_digest(RELEASE_DIR)
        _RUNNING = {
            "version": VERSION,
            "digest": digest,
            "release": f"{VERSION}-{digest[:12]}",
            "path": RELEASE_DIR,
            "python": ".".join(str(part) for part in sys.version_info[:3]),
        }
    return dict(_RUNNING)

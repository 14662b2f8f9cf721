"""Private folders and crash-safe file writes for everything under the runtime root.

Invariant: a reader of any file written here sees either the old or the new content,
never a mix, and after a crash both the file and its folder entry are on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, and any missing parents too (e.g. ``~/.hybridops/envs``);
    an existing ``path`` is tightened to 0700, existing parents are left alone."""
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent run made it first
            folder.mkdir(mode=DIR_MODE)
        # mkdir's mode is filtered by the umask.
        os.chmod(folder, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    # The temp name does not end in .json/.yml so nobody globbing the folder picks it up.
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def dump_json(doc: Any) -> str:
    """The on-disk JSON form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, dump_json(doc).encode("utf-8"))


def dump_yaml(doc: Any, sort_keys: bool = True) -> str:
    return yaml.safe_dump(doc, sort_keys=sort_keys, default_flow_style=False, allow_unicode=True)


def atomic_write_yaml(path: Path, doc: Any, header: str = "", sort_keys: bool = True) -> None:
    atomic_write_bytes(path, (header + dump_yaml(doc, sort_keys)).encode("utf-8"))


def tighten_tree(top: Path) -> None:
    """Folders 0700 and files 0600 under ``top``: what a playbook fetched keeps its umask."""
    if not top.is_dir():
        return
    for folder, dirs, files in os.walk(top):
        os.chmod(folder, DIR_MODE)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, FILE_MODE)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]

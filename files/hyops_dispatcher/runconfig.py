"""The config the daemon runs on, kept as `<state folder>/config.running.json` (the exact
bytes it loaded), so read commands can still see with a bad file on disk.

Invariant: the copy holds only bytes that passed parse_config; a reader parses it again
(never trusts it) and never follows a symlink or blocks on a FIFO put in its place.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

from .config import Config, ConfigError, parse_config
from .fsio import check_own_path, open_own_file, write_file_durably

RUNNING_COPY = "config.running.json"


def running_copy_path(config: Config) -> str:
    return os.path.join(os.path.dirname(config.state_file), RUNNING_COPY)


def keep_running_config(config: Config) -> None:
    """Called by the daemon once a config is in force (start, good reload)."""
    if not config.raw:
        return
    path = running_copy_path(config)
    check_own_path(path)  # replaced by rename: refuse a FIFO left there
    write_file_durably(path, config.raw, mode=0o640)


def _candidates(config_path: str) -> List[str]:
    """Where the copy of an unreadable config may be: its own state_file or root when
    the bad file still names them, else the root above config/."""
    folders = []
    try:
        with open(config_path, "rb") as fh:
            obj = json.loads(fh.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError):
        obj = None
    if isinstance(obj, dict):
        if isinstance(obj.get("state_file"), str) and obj["state_file"].startswith("/"):
            folders.append(os.path.dirname(obj["state_file"]))
        if isinstance(obj.get("root"), str) and obj["root"].startswith("/"):
            folders.append(os.path.join(obj["root"], "state"))
    folders.append(os.path.join(os.path.dirname(os.path.dirname(config_path)), "state"))
    return [os.path.join(f, RUNNING_COPY) for f in folders]


def load_running_config(config_path: str) -> Optional[Config]:
    """The copy the daemon last ran on, parsed as if it were `config_path`; None when
    there is none or it does not parse."""
    config_path = os.path.abspath(config_path)
    for path in _candidates(config_path):
        try:
            with os.fdopen(open_own_file(path, os.O_RDONLY, owned=False), "rb") as fh:
                raw = fh.read(1 << 20)
            return parse_config(raw, config_path)
        except (OSError, ConfigError):
            continue
    return None

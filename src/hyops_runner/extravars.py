"""Write the playbook's extra-vars file (``hyops.inputs.yml``); inventory.py uses its dumper.

Every string value is tagged ``!unsafe`` so Ansible treats inputs as data: a route
target or a host name containing ``{{`` is passed through, never templated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .fsutil import atomic_write_bytes


class _UnsafeDumper(yaml.SafeDumper):
    pass


def _unsafe_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", value)


def _plain_keys(dumper: yaml.SafeDumper, value: dict[Any, Any]) -> yaml.Node:
    pairs = []
    for key in sorted(value, key=str):
        key_node = (
            yaml.SafeDumper.represent_str(dumper, key)
            if isinstance(key, str)
            else dumper.represent_data(key)
        )
        pairs.append((key_node, dumper.represent_data(value[key])))
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs, flow_style=False)


_UnsafeDumper.add_representer(str, _unsafe_str)
_UnsafeDumper.add_representer(dict, _plain_keys)


def dumps(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_UnsafeDumper, default_flow_style=False, allow_unicode=True)


def write(path: Path, inputs: dict[str, Any], hyops_vars: dict[str, str]) -> None:
    doc = {**inputs, **hyops_vars}
    header = "# Extra vars for ansible-playbook, written by hyops; strings are !unsafe (data).\n"
    atomic_write_bytes(path, (header + dumps(doc)).encode("utf-8"))

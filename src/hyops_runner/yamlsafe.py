"""Load YAML that a person wrote, refusing documents that would blow up when walked.

PyYAML builds aliases as shared objects, so a 600-byte "billion laughs" document loads
quickly; it is everything after (merging, validating, redacting, dumping) that walks it
expanded. So the node graph is composed first and its expanded size counted (linear
time, memoised per node) against a budget, and the text is capped in size, before any
Python object is built.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000


class YamlRefused(ValueError):
    """The text is not YAML, or too big once aliases are expanded."""


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    if depth > 200:
        raise YamlRefused("nested more than 200 levels deep")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_NODES + 1  # a node that contains itself expands without end
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1)
    memo[key] = size
    return size


def load_yaml_text(text: str, max_nodes: int = MAX_NODES, max_bytes: int = MAX_BYTES) -> Any:
    """The document in ``text`` (None when empty); YamlRefused names what is wrong."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise YamlRefused(f"larger than {max_bytes} bytes")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > max_nodes:
            raise YamlRefused(
                f"expands to more than {max_nodes} nodes (YAML aliases); write the values out"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlRefused(f"not valid YAML: {where}{' '.join(str(problem).split())}") from None
    finally:
        loader.dispose()

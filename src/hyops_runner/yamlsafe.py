"""Load inputs a person wrote (YAML file, JSON in the environment) within one budget.

Every input layer is held to the same limits before anything walks it: at most
``MAX_DEPTH`` levels of nesting, ``MAX_NODES`` values and ``MAX_EXPANDED_BYTES`` of
scalar text once YAML aliases are expanded, and a YAML text of at most ``MAX_BYTES``.
PyYAML builds aliases as shared objects, so a 600-byte "billion laughs" document (or a
100 KB string aliased 2,000 times) loads quickly; it is everything after (merging,
validating, redacting, dumping) that walks it expanded. So the YAML node graph is
composed first and its expanded size counted (linear time, memoised per node); JSON
text has its bracket depth counted before it is parsed. Nothing recurses deeper than
the budget, so no input ends in a RecursionError.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_EXPANDED_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 200
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"


class YamlRefused(ValueError):
    """The text is not YAML/JSON, or over the budget; ``str()`` says which."""


def _too_big(nodes: int, size: int, max_nodes: int = MAX_NODES) -> YamlRefused | None:
    if nodes > max_nodes:
        return YamlRefused(
            f"expands to more than {max_nodes} nodes (YAML aliases); write the values out"
        )
    if size > MAX_EXPANDED_BYTES:
        return YamlRefused(
            f"expands to more than {MAX_EXPANDED_BYTES} bytes (YAML aliases); write the values out"
        )
    return None


def _expanded_size(
    node: yaml.Node, memo: dict[int, tuple[int, int]], depth: int = 0
) -> tuple[int, int]:
    """(values, bytes of scalar text) of ``node`` with every alias expanded."""
    if depth > MAX_DEPTH:
        raise YamlRefused(TOO_DEEP)
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = (MAX_NODES + 1, 0)  # a node that contains itself expands without end
    nodes, size = 1, 0
    if isinstance(node, yaml.ScalarNode):
        size = len(node.value)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    for child in children:
        more_nodes, more_size = _expanded_size(child, memo, depth + 1)
        nodes, size = nodes + more_nodes, size + more_size
        if _too_big(nodes, size):
            break  # already over: stop counting (and multiplying) here
    memo[key] = (nodes, size)
    return nodes, size


def load_yaml_text(text: str, max_nodes: int = MAX_NODES, max_bytes: int = MAX_BYTES) -> Any:
    """The document in ``text`` (None when empty); YamlRefused names what is wrong."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise YamlRefused(f"larger than {max_bytes} bytes")
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is not None:
                _refuse_duplicate_keys(node)
        except RecursionError:
            # PyYAML's composer recurses per level; the budget is far below its limit.
            raise YamlRefused(TOO_DEEP) from None
        if node is None:
            return None
        nodes, size = _expanded_size(node, {})
        refused = _too_big(nodes, size, max_nodes)
        if refused:
            raise refused
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlRefused(f"not valid YAML: {where}{' '.join(str(problem).split())}") from None
    finally:
        loader.dispose()


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    """PyYAML keeps the last of two equal keys silently; a person meant one of them."""
    todo, seen = [root], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        raise YamlRefused(
                            f"line {line}: key {key.value!r} given twice "
                            f"(first on line {first[key.value]}); keep one"
                        )
                    first[key.value] = line
                todo.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)


def json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON ``text`` (strings skipped), without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_json_text(text: str, depth_used: int = 0) -> Any:
    """JSON ``text`` within the budget; ``depth_used`` levels are already taken (an
    ``HYOPS_INPUT_a__b`` path puts its value two levels down). json.JSONDecodeError
    for text that is not JSON."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(f"larger than {MAX_BYTES} bytes")
    if depth_used + json_depth(text) > MAX_DEPTH:
        raise YamlRefused(TOO_DEEP)
    doc = json.loads(text)
    refused = _too_big(*_value_size(doc))
    if refused:
        raise refused
    return doc


def _value_size(doc: Any) -> tuple[int, int]:
    nodes = size = 0
    todo = [doc]
    while todo:
        item = todo.pop()
        nodes += 1
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return nodes, size

"""YAML with the line of every node, so errors can say ``file.yaml:14: field: ...``.

Shared by kit specs and the backfill job files a kit carries: one loader, so build and
verify read the same document the same way (duplicate keys refused, timestamps kept as strings).
"""

from __future__ import annotations

from typing import Any

import yaml

from kitbuilder.errors import KitError, SpecError


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, keeps timestamps as strings and records lines."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[tuple[Any, ...], int] = {}


# Timestamps stay strings: the schema and timefmt decide what a valid time is.
_LineLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_EMPTY_SPEC = "the spec is empty; expected a mapping with name, version, sequence, ..."


def load_with_lines(
    text: str, where: str, *, error: type[KitError] = SpecError, empty: str = _EMPTY_SPEC
) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse one YAML document; return it with the line of every node (keyed by its path).

    ``error`` is raised for invalid YAML, duplicate or non-string keys: SpecError for a spec being
    built, FormatError for a file inside a kit.
    """
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{where}{line}: not valid YAML: {problem}") from exc
    finally:
        loader.dispose()
    if node is None:
        raise error(f"{where}: {empty}")
    lines: dict[tuple[Any, ...], int] = {}

    def walk(current: yaml.Node, location: tuple[Any, ...]) -> Any:
        lines[location] = current.start_mark.line + 1
        if isinstance(current, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in current.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise error(f"{where}:{key_node.start_mark.line + 1}: keys must be strings, got {key!r}")
                if key in result:
                    raise error(f"{where}:{key_node.start_mark.line + 1}: {key!r} is given twice")
                result[key] = walk(value_node, (*location, key))
            return result
        if isinstance(current, yaml.SequenceNode):
            return [walk(item, (*location, number)) for number, item in enumerate(current.value)]
        return loader.construct_object(current, deep=True)

    return walk(node, ()), lines


def field_name(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"

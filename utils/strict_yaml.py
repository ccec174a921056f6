"""YAML recipes read strictly: a key given twice in one mapping is an error, not a silently dropped setting.

PyYAML keeps the last of two equal keys (``calibration: {size: 64}`` then ``calibration: {seed: 3}`` lost the
size without a word, issue #30); a recipe that is not UTF-8 was a UnicodeDecodeError traceback. Both are one
line naming the file here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from utils.errors import SuiteError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping holding the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (the later one would "
                                                        "silently replace the earlier)", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path, what: str = "config file") -> Any:
    """The YAML document in ``path``; a duplicate key, invalid YAML or non-UTF-8 bytes are one line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{what} {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SuiteError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from exc

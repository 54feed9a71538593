"""YAML read with bounds: size, nesting depth, aliases and list lengths are checked before any value is
built, so a hostile manifest or plan (a YAML alias bomb, a 66 MB list) is one sentence, not gigabytes.

The limits are far above what a real manifest or plan needs (docs/design.md, "Bounded input").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_depth: int = 32  # nested mappings and lists
    max_aliases: int = 100  # *alias references
    max_list: int = 10_000  # items of one list (or keys of one mapping)
    max_nodes: int = 200_000  # values once every alias is expanded: what a consumer would walk


MANIFEST = Limits(max_bytes=1 << 20)  # 1 MiB
PLAN = Limits(max_bytes=32 << 20, max_depth=32, max_aliases=0, max_list=100_000, max_nodes=2_000_000)


class TooLarge(ValueError):
    """Input over a limit; the message is the end of one sentence ("... is over ...: ...")."""


class YAMLSyntax(ValueError):
    def __init__(self, mark: Any):
        super().__init__("not valid YAML")
        self.mark = mark


def _loader(limits: Limits) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        depth = 0
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > limits.max_aliases:
                    raise TooLarge(f"has more than {limits.max_aliases} YAML aliases (*name)")
            self.depth += 1
            if self.depth > limits.max_depth:
                raise TooLarge(f"nests deeper than {limits.max_depth} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader


def _expanded_size(node: yaml.Node, limits: Limits) -> int:
    """How many values ``node`` stands for once every alias is expanded (shared nodes counted each time
    they are referenced), computed without expanding anything."""
    memo: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        if id(current) in memo:
            continue
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [n for pair in current.value for n in pair]
        else:
            memo[id(current)] = 1
            continue
        if len(current.value) > limits.max_list:
            line = current.start_mark.line + 1
            raise TooLarge(f"has a list or mapping of more than {limits.max_list} items (at line {line})")
        if not children_done:
            stack.append((current, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
            continue
        total = 1 + sum(memo[id(c)] for c in children)
        if total > limits.max_nodes:
            raise TooLarge(f"expands to more than {limits.max_nodes} values (YAML aliases?)")
        memo[id(current)] = total
    return memo[id(node)]


def loads(text: str, limits: Limits) -> Any:
    """Parse ``text`` (already within ``limits.max_bytes``) within the other limits."""
    try:
        loader = _loader(limits)(text)
    except yaml.YAMLError as exc:  # a character YAML does not allow
        raise YAMLSyntax(getattr(exc, "problem_mark", None)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, limits)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YAMLSyntax(getattr(exc, "problem_mark", None)) from None
    finally:
        loader.dispose()


def load_file(path: str | os.PathLike[str], limits: Limits) -> Any:
    """Read and parse the file ``path``: no more than ``limits.max_bytes`` is ever read."""
    with Path(path).open("rb") as fh:
        data = fh.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise TooLarge(f"is larger than {limits.max_bytes // 1024} KiB")
    return loads(data.decode("utf-8"), limits)

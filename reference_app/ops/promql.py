"""The metric selectors of a PromQL expression, to check every rule and panel against real data."""

from __future__ import annotations

from dataclasses import dataclass

import promql_parser


@dataclass(frozen=True)
class Selector:
    """One vector selector of an expression.

    Attributes:
        name: The metric name.
        text: The selector as PromQL (name and matchers), a query of its own.
    """

    name: str
    text: str


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr`, in order, without repeats.

    Raises:
        ValueError: `expr` is not valid PromQL (the parser's message says where).
    """
    tree = promql_parser.parse(expr)
    found: dict[str, Selector] = {}

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            matchers = ", ".join(
                f"{m.name}{_OPS[str(m.op)]}{_quote(m.value)}"
                for m in node.matchers.matchers
                if m.name != "__name__"
            )
            text = f"{node.name}{{{matchers}}}" if matchers else node.name
            found.setdefault(text, Selector(node.name, text))
        return True

    promql_parser.walk(tree, visit)
    return list(found.values())


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

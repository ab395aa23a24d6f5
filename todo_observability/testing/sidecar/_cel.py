"""The part of CEL that routing rules use: `event.type == "x" && event.data.kind != "y"`.

daprd compiles each `match` with cel-go over one variable, `event` (the CloudEvent as a map).
The emulator evaluates `==`, `!=`, `&&`, `||`, `!`, `has(...)`, parentheses, field selection
(`event.data.kind`, `event["data"]`) and string, number, boolean and null literals, with CEL's
rules: selecting a missing field is an error, `&&`/`||` absorb an error when the other side
decides, values of different types are unequal. Anything else (`<`, `in`, `size()`,
`startsWith`, other variables) is refused when the subscriptions are loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from todo_observability.testing.sidecar._json import GoNumber

__all__ = ["CelError", "Expression", "UnsupportedExpressionError", "compile_match"]


class UnsupportedExpressionError(ValueError):
    """A routing `match` the emulator cannot evaluate (or that is not valid CEL)."""


class CelError(Exception):
    """Evaluating a `match` failed (a missing field): daprd then retries the message."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+\.\d+(?:[eE][+-]?\d+)?|-?\d+(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<op>==|!=|&&|\|\||!|\.|\(|\)|\[|\])
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<other>\S+)
    )""",
    re.VERBOSE,
)
_STRING_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\", "`": "`"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        kind = match.lastgroup
        if kind is None:
            continue
        tokens.append(_Token(kind, match.group(kind)))
    return tokens


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            nxt = body[index + 1]
            if nxt in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[nxt])
                index += 2
                continue
            if nxt == "u" and index + 5 < len(body):
                out.append(chr(int(body[index + 2 : index + 6], 16)))
                index += 6
                continue
            raise UnsupportedExpressionError(f"unsupported escape in {literal}")
        out.append(char)
        index += 1
    return "".join(out)


# Nodes: ("lit", value) ("path", (field, ...)) ("has", path) ("not", node)
# ("and", a, b) ("or", a, b) ("eq", a, b) ("ne", a, b)
_Node = tuple[Any, ...]


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise self._unsupported("unexpected end of expression")
        self.index += 1
        return token

    def _expect(self, text: str) -> None:
        token = self._take()
        if token.text != text:
            raise self._unsupported(f"expected {text!r}, found {token.text!r}")

    def _unsupported(self, why: str) -> UnsupportedExpressionError:
        return UnsupportedExpressionError(
            f"routing rule match {self.source!r} is not supported by the sidecar emulator ({why}); "
            "it evaluates ==, !=, &&, ||, !, has() and parentheses over event fields and "
            "string, number, boolean or null literals"
        )

    def parse(self) -> _Node:
        node = self._or()
        token = self._peek()
        if token is not None:
            raise self._unsupported(f"unexpected {token.text!r}")
        return node

    def _or(self) -> _Node:
        node = self._and()
        while (token := self._peek()) is not None and token.text == "||":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> _Node:
        node = self._unary()
        while (token := self._peek()) is not None and token.text == "&&":
            self._take()
            node = ("and", node, self._unary())
        return node

    def _unary(self) -> _Node:
        token = self._peek()
        if token is not None and token.text == "!":
            self._take()
            return ("not", self._unary())
        return self._comparison()

    def _comparison(self) -> _Node:
        left = self._operand()
        token = self._peek()
        if token is not None and token.text in ("==", "!="):
            self._take()
            right = self._operand()
            return ("eq" if token.text == "==" else "ne", left, right)
        return left

    def _operand(self) -> _Node:
        token = self._take()
        if token.text == "(":
            node = self._or()
            self._expect(")")
            return node
        if token.kind == "string":
            return ("lit", _unquote(token.text))
        if token.kind == "number":
            return ("lit", Decimal(token.text))
        if token.kind == "ident":
            if token.text in ("true", "false"):
                return ("lit", token.text == "true")
            if token.text == "null":
                return ("lit", None)
            if token.text == "has":
                self._expect("(")
                path = self._path(self._take())
                self._expect(")")
                if len(path[1]) < 1:
                    raise self._unsupported("has() needs a field selection")
                return ("has", path)
            return self._path(token)
        raise self._unsupported(f"unexpected {token.text!r}")

    def _path(self, token: _Token) -> _Node:
        if token.kind != "ident" or token.text != "event":
            raise self._unsupported(f"unknown name {token.text!r}, only 'event' is declared")
        fields: list[str] = []
        while (nxt := self._peek()) is not None and nxt.text in (".", "["):
            self._take()
            if nxt.text == ".":
                name = self._take()
                if name.kind != "ident":
                    raise self._unsupported(f"expected a field name, found {name.text!r}")
                after = self._peek()
                if after is not None and after.text == "(":
                    raise self._unsupported(f"function {name.text}() is not supported")
                fields.append(name.text)
            else:
                key = self._take()
                if key.kind != "string":
                    raise self._unsupported("only string keys can be indexed")
                fields.append(_unquote(key.text))
                self._expect("]")
        return ("path", tuple(fields))


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal, GoNumber)):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    return None


def _equal(left: Any, right: Any) -> bool:
    left_number, right_number = _number(left), _number(right)
    if left_number is not None or right_number is not None:
        return left_number is not None and right_number is not None and left_number == right_number
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            _equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if type(left) is not type(right):
        return False
    return bool(left == right)


class _Error:
    def __init__(self, message: str):
        self.message = message


def _select(event: Any, fields: tuple[str, ...]) -> Any:
    value = event
    for name in fields:
        if not isinstance(value, dict):
            return _Error(f"no such key: {name} (not a map)")
        if name not in value:
            return _Error(f"no such key: {name}")
        value = value[name]
    return value


def _evaluate(node: _Node, event: Any) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        return _select(event, node[1])
    if kind == "has":
        fields = node[1][1]
        parent = _select(event, fields[:-1])
        if isinstance(parent, _Error):
            return parent
        if not isinstance(parent, dict):
            return _Error("has() on a value that is not a map")
        return fields[-1] in parent
    if kind == "not":
        value = _evaluate(node[1], event)
        if isinstance(value, _Error):
            return value
        if not isinstance(value, bool):
            return _Error("no such overload: !_")
        return not value
    if kind in ("and", "or"):
        left, right = _evaluate(node[1], event), _evaluate(node[2], event)
        decisive = kind == "or"  # true decides an ||, false decides an &&
        errors = [v for v in (left, right) if isinstance(v, _Error)]
        values = [v for v in (left, right) if not isinstance(v, _Error)]
        if any(not isinstance(v, bool) for v in values):
            return _Error(f"no such overload: _{'||' if decisive else '&&'}_")
        if decisive in values:
            return decisive
        if errors:
            return errors[0]
        return not decisive
    left, right = _evaluate(node[1], event), _evaluate(node[2], event)
    for value in (left, right):
        if isinstance(value, _Error):
            return value
    equal = _equal(left, right)
    return equal if kind == "eq" else not equal


@dataclass(frozen=True)
class Expression:
    """A compiled routing `match`."""

    source: str
    _tree: _Node

    def evaluate(self, event: Any) -> bool:
        """Whether `event` (the CloudEvent as a dict) matches.

        Raises:
            CelError: evaluation failed (a missing field, a non-boolean result).
        """
        value = _evaluate(self._tree, event)
        if isinstance(value, _Error):
            raise CelError(value.message)
        if not isinstance(value, bool):
            raise CelError(f"the result of match expression {self.source} was not a boolean")
        return value

    def __str__(self) -> str:
        return self.source


def compile_match(source: str) -> Expression:
    """Compile a routing rule's `match`.

    Raises:
        UnsupportedExpressionError: outside the supported subset (or not CEL).
    """
    parser = _Parser(source)
    for token in parser.tokens:
        if token.kind == "other":
            raise parser._unsupported(f"unsupported {token.text!r}")
    if not parser.tokens:
        raise parser._unsupported("empty expression")
    return Expression(source, parser.parse())

"""JSON as daprd reads and writes it: Go's `encoding/json`, not Python's `json`.

daprd builds a CloudEvent as a Go map and marshals it, so the bytes a subscriber receives have
their keys sorted, no spaces, `<`, `>` and `&` escaped, and numbers exactly as the publisher
wrote them (daprd decodes with `UseNumber`). The emulator stores and delivers those same bytes.

Every body daprd decodes into a Go struct (the app's `/dapr/subscribe` list and its answers to
deliveries; bulk publish, state save, bulk get and transaction requests) is decoded here by
`unmarshal`, into a `GoType` declared at the end of this module, with Go's rules: object keys
match struct fields exactly, else case-insensitively; a repeated key overwrites (last wins); an
unknown key is ignored; `null` leaves a non-pointer as it was; a value of the wrong type is an
error with Go's message; a number in an `interface{}` is a float64.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeGuard

__all__ = [
    "APP_BULK_RESPONSE",
    "APP_RESPONSE",
    "BULK_GET_REQUEST",
    "BULK_PUBLISH_ENTRIES",
    "DELETE_REQUEST",
    "SET_REQUEST",
    "STATE_SET_REQUESTS",
    "SUBSCRIPTIONS",
    "TRANSACTION_REQUEST",
    "GoField",
    "GoNumber",
    "GoType",
    "GoTypeError",
    "Struct",
    "dumps",
    "is_text",
    "loads",
    "map_decode",
    "unmarshal",
]


class GoNumber(str):
    """A JSON number kept as the text it was written with, like Go's `json.Number`."""

    __slots__ = ()


class Struct(dict[str, Any]):
    """A JSON object whose keys keep their order, as Go marshals a struct (maps are sorted)."""


def is_text(value: object) -> TypeGuard[str]:
    """Whether a decoded JSON value is a string (a `GoNumber` is a number)."""
    return isinstance(value, str) and not isinstance(value, GoNumber)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character in JSON: {name} is not a JSON value")


def loads(data: bytes | str) -> Any:
    """Decode JSON the way daprd does: numbers stay `GoNumber` text, NaN and Infinity are errors.

    Raises:
        ValueError: `data` is not one JSON value (or not UTF-8).
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(
        data,
        parse_int=GoNumber,
        parse_float=GoNumber,
        parse_constant=_reject_constant,
    )


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    escaped = _ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if "\ud800" <= char <= "\udfff":
        return "\\ufffd"  # Go replaces what is not valid UTF-8
    return f"\\u{ord(char):04x}"


def _quote(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _float(value: float) -> str:
    # Go's float64 encoding: the shortest digits that read back, without an exponent from 1e-6
    # up to 1e21, else with one ("1e-7", "1e+21": Go trims "e-07" to "e-7", not "e+07").
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    shortest = Decimal(repr(value))
    size = abs(value)
    if 1e-6 <= size < 1e21:
        return format(shortest.normalize(), "f")
    sign, digits, exponent = shortest.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    power = len(digits) - 1 + exponent
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    # Go writes at least two exponent digits, then trims "e-07" to "e-7" (and only that case).
    exponent_text = f"-{-power}" if power < 0 else f"+{power:02d}"
    return f"{'-' if sign else ''}{mantissa}e{exponent_text}"


def _encode(value: Any, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, GoNumber):
        parts.append(str(value))
    elif isinstance(value, str):
        parts.append(_quote(value))
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        parts.append(_float(value))
    elif isinstance(value, Mapping):
        keys = list(value) if isinstance(value, Struct) else sorted(value)
        parts.append("{")
        for index, key in enumerate(keys):
            if index:
                parts.append(",")
            parts.append(_quote(str(key)))
            parts.append(":")
            _encode(value[key], parts)
        parts.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _encode(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Encode `value` as Go's `json.Marshal` would: compact, map keys sorted, HTML-escaped."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode("utf-8", "surrogatepass")


# --- decoding into Go types ------------------------------------------------------------------


class GoTypeError(ValueError):
    """A body Go's decoder refuses: bad syntax, or a value of the wrong type for its field."""


@dataclass(frozen=True)
class GoField:
    """A struct field: its Go name (what mapstructure matches) and its JSON key (tag or name)."""

    name: str
    key: str
    type: GoType


@dataclass(frozen=True)
class GoType:
    """A Go type a JSON body is decoded into, named as Go's errors print it (`[]state.SetRequest`).

    `kind` is one of `string`, `bool`, `int`, `any`, `map` (string keys), `slice`, `pointer`,
    `struct`; `bits` bounds an `int`.
    """

    kind: str
    name: str
    elem: GoType | None = None
    fields: tuple[GoField, ...] = ()
    bits: int = 64

    def zero(self) -> Any:
        """Go's zero value: "", False, 0, nil (None), or a struct of zeros (a dict by JSON key)."""
        if self.kind == "string":
            return ""
        if self.kind == "bool":
            return False
        if self.kind == "int":
            return 0
        if self.kind == "struct":
            return {f.key: f.type.zero() for f in self.fields}
        return None


def _named(kind: str, name: str, bits: int = 64) -> GoType:
    return GoType(kind, name, bits=bits)


def _map(elem: GoType) -> GoType:
    return GoType("map", f"map[string]{elem.name}", elem)


def _slice(elem: GoType) -> GoType:
    return GoType("slice", f"[]{elem.name}", elem)


def _pointer(elem: GoType) -> GoType:
    return GoType("pointer", f"*{elem.name}", elem)


def _struct(name: str, *fields: tuple[str, str, GoType]) -> GoType:
    return GoType("struct", name, fields=tuple(GoField(*field) for field in fields))


class _Object(list[tuple[str, Any]]):
    """A JSON object as written: its members in order, repeated keys included."""


_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder(
    object_pairs_hook=_Object,
    parse_int=GoNumber,
    parse_float=GoNumber,
    parse_constant=_reject_constant,
)


def _quote_char(char: str) -> str:
    # Go names the offending byte: `'x'`, `'\''`, `'"'`, `'\x01'`; the first byte of a non-ASCII one.
    byte = char.encode("utf-8", "surrogatepass")[0]
    if byte == ord("'"):
        return "'\\''"
    if byte == ord('"'):
        return "'\"'"
    if 0x20 <= byte < 0x7F:
        return f"'{chr(byte)}'"
    named = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
    if byte in named:
        return f"'{named[byte]}'"
    if byte < 0x80:
        return f"'\\x{byte:02x}'"
    return f"'{chr(byte)}'"


def _innermost(doc: str, end: int) -> str:
    """`{` or `[`: the container still open at `end` (strings skipped)."""
    stack: list[str] = []
    index, in_string = 0, False
    while index < end:
        char = doc[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
        index += 1
    return stack[-1] if stack else ""


def _constant_at(doc: str) -> int:
    """Where the first `NaN` or `Infinity` outside strings starts (its letter)."""
    index, in_string = 0, False
    while index < len(doc):
        char = doc[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "NI":
            return index
        index += 1
    return 0


def _syntax_error(exc: json.JSONDecodeError, eof: str) -> GoTypeError:
    """Go's scanner message for what Python's decoder refused at the same place."""
    doc, pos, msg = exc.doc, exc.pos, exc.msg
    if msg.startswith("Invalid \\escape") and pos + 1 < len(doc):
        return GoTypeError(f"invalid character {_quote_char(doc[pos + 1])} in string escape code")
    if msg.startswith("Invalid \\uXXXX"):
        return GoTypeError("invalid character in \\u hexadecimal character escape")
    if msg.startswith("Illegal trailing comma"):
        # Python 3.13 points at the comma; Go at what follows it, the closing bracket.
        pos = len(doc) - len(doc[pos + 1 :].lstrip(_WHITESPACE))
        msg = "Expecting property name" if msg.endswith("object") else "Expecting value"
    if pos >= len(doc) or msg.startswith("Unterminated string"):
        return GoTypeError(eof)
    char = _quote_char(doc[pos])
    if msg.startswith("Expecting property name"):
        context = "looking for beginning of object key string"
    elif msg.startswith("Expecting ':'"):
        context = "after object key"
    elif msg.startswith("Expecting ','"):
        inside = _innermost(doc, pos)
        context = "after object key:value pair" if inside == "{" else "after array element"
    elif msg.startswith("Invalid control character"):
        context = "in string literal"
    elif msg.startswith("Extra data"):
        context = "after top-level value"
    else:
        context = "looking for beginning of value"
    return GoTypeError(f"invalid character {char} {context}")


def _parse(data: bytes | str, *, stream: bool) -> Any:
    # Go replaces bytes that are not UTF-8 (in strings) instead of refusing the body.
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise GoTypeError("EOF" if stream else "unexpected end of JSON input")
    eof = "unexpected EOF" if stream else "unexpected end of JSON input"
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise _syntax_error(exc, eof) from None
    except ValueError:  # NaN, Infinity: Python reads them, Go's scanner stops at their letter
        at = _constant_at(text)
        context = "in numeric literal" if text[at - 1] == "-" else "looking for beginning of value"
        raise GoTypeError(f"invalid character {_quote_char(text[at])} {context}") from None
    rest = text[end:].lstrip(_WHITESPACE)
    if rest and not stream:
        # `json.Unmarshal` reads one value; a `json.Decoder` stops after it and ignores the rest.
        raise GoTypeError(f"invalid character {_quote_char(rest[0])} after top-level value")
    return value


_SURROGATES = re.compile("[\ud800-\udfff]")


def _go_string(text: str) -> str:
    return _SURROGATES.sub("\ufffd", text)  # Go decodes a lone surrogate escape to U+FFFD


_FOLDS_TO_ASCII = {"\u212a": "K", "\u017f": "S"}


def _fold(text: str) -> str:
    # Go matches keys with Unicode simple folding: against ASCII field names that is ASCII case,
    # plus the Kelvin sign (which folds to k) and the long s (to s).
    return "".join(ch.upper() if ch.isascii() else _FOLDS_TO_ASCII.get(ch, ch) for ch in text)


def _field(fields: tuple[GoField, ...], key: str, name_of: str = "key") -> GoField | None:
    """The field `key` sets: the exact name, else the first whose name folds the same."""
    for field in fields:
        if getattr(field, name_of) == key:
            return field
    folded = _fold(key)
    for field in fields:
        if _fold(getattr(field, name_of)) == folded:
            return field
    return None


def _kind_of(node: Any) -> str:
    if isinstance(node, bool):
        return "bool"
    if isinstance(node, GoNumber):
        return "number"
    if isinstance(node, str):
        return "string"
    if isinstance(node, _Object):
        return "object"
    return "array"


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


class _Decoder:
    """One `Unmarshal`: the path of JSON keys from the root struct, for Go's error messages."""

    def __init__(self) -> None:
        self.path: list[str] = []
        self.struct = ""

    def error(self, value: str, target: GoType) -> GoTypeError:
        if self.struct:
            where = f"Go struct field {self.struct}.{'.'.join(self.path)}"
        else:
            where = "Go value"
        return GoTypeError(f"json: cannot unmarshal {value} into {where} of type {target.name}")

    def decode(self, node: Any, target: GoType, current: Any) -> Any:
        """`node` decoded into a Go value of `target` that holds `current`."""
        if node is None:
            # null leaves a non-pointer as it was; it sets a pointer, map, slice or any to nil.
            return current if target.kind in ("string", "bool", "int", "struct") else None
        kind = target.kind
        if kind == "any":
            return self.interface(node)
        if kind == "pointer":
            assert target.elem is not None
            pointee = current if current is not None else target.elem.zero()
            return self.decode(node, target.elem, pointee)
        if kind == "string":
            if is_text(node):
                return _go_string(node)
        elif kind == "bool":
            if isinstance(node, bool):
                return node
        elif kind == "int":
            if isinstance(node, GoNumber):
                limit = 1 << (target.bits - 1)
                if not _INTEGER.fullmatch(node) or not -limit <= int(node) < limit:
                    raise self.error(f"number {node}", target)
                return int(node)
        elif kind == "struct" and isinstance(node, _Object):
            return self.struct_value(node, target, current)
        elif kind == "map" and isinstance(node, _Object):
            assert target.elem is not None
            mapping = dict(current) if current is not None else {}
            for key, member in node:
                mapping[_go_string(key)] = self.decode(member, target.elem, target.elem.zero())
            return mapping
        elif kind == "slice" and isinstance(node, list) and not isinstance(node, _Object):
            assert target.elem is not None
            # Go decodes each element into the one already at that index, if any.
            existing = list(current) if current is not None else []
            return [
                self.decode(
                    item, target.elem, existing[i] if i < len(existing) else target.elem.zero()
                )
                for i, item in enumerate(node)
            ]
        raise self.error(_kind_of(node), target)

    def struct_value(self, node: _Object, target: GoType, current: Any) -> dict[str, Any]:
        value = dict(current) if current is not None else target.zero()
        outer = (list(self.path), self.struct)
        for key, member in node:
            field = _field(target.fields, key)
            if field is None:
                continue  # unknown keys are ignored
            self.path.append(field.key)
            self.struct = target.name.rsplit(".", 1)[-1]
            value[field.key] = self.decode(member, field.type, value[field.key])
            self.path, self.struct = list(outer[0]), outer[1]
        return value

    def interface(self, node: Any) -> Any:
        if isinstance(node, GoNumber):
            number = float(node)
            if math.isinf(number):
                raise self.error(f"number {node}", _named("any", "float64"))
            return number
        if isinstance(node, _Object):
            return {_go_string(key): self.interface(member) for key, member in node}
        if isinstance(node, list):
            return [self.interface(item) for item in node]
        return _go_string(node) if isinstance(node, str) else node


def unmarshal(data: bytes | str, target: GoType, *, stream: bool = False) -> Any:
    """Decode a body as Go decodes it into `target`.

    `stream=False` is `json.Unmarshal` (one value, nothing after it); `stream=True` is
    `json.NewDecoder(body).Decode`, which daprd uses for most bodies: the first value counts,
    what follows is not read, and an empty body is `EOF`.

    Raises:
        GoTypeError: with Go's message (`json: cannot unmarshal number into Go struct field
            SetRequest.key of type string`, `unexpected end of JSON input`, ...).
    """
    return _Decoder().decode(_parse(data, stream=stream), target, target.zero())


def _go_type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "[]interface {}"


def _go_print(value: Any) -> str:
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def map_decode(value: Any, target: GoType) -> dict[str, Any]:
    """Decode a decoded `interface{}` into a struct as mapstructure does (a transaction request).

    Keys match the Go field names (not the JSON tags), exactly, else case-insensitively.

    Raises:
        GoTypeError: mapstructure's message, listing every field that could not be converted.
    """
    errors: list[str] = []

    def convert(item: Any, kind: GoType, name: str, current: Any) -> Any:
        if item is None:
            return current if kind.kind in ("string", "bool", "int", "struct") else None
        if kind.kind == "any":
            return item
        if kind.kind == "pointer":
            assert kind.elem is not None
            return convert(item, kind.elem, name, kind.elem.zero())
        if kind.kind == "string" and isinstance(item, str):
            return item
        if kind.kind == "bool" and isinstance(item, bool):
            return item
        if kind.kind == "map" and isinstance(item, dict):
            assert kind.elem is not None
            return {
                key: convert(member, kind.elem, f"{name}[{key}]", kind.elem.zero())
                for key, member in item.items()
            }
        if kind.kind == "struct" and isinstance(item, dict):
            decoded = kind.zero()
            for key, member in item.items():
                field = _field(kind.fields, key, name_of="name")
                if field is not None:
                    path = f"{name}.{field.name}" if name else field.name
                    decoded[field.key] = convert(member, field.type, path, decoded[field.key])
            return decoded
        errors.append(
            f"'{name}' expected type '{kind.name}', got unconvertible type "
            f"'{_go_type_of(item)}', value: '{_go_print(item)}'"
        )
        return current

    if value is not None and not isinstance(value, dict):
        kind = {"float64": "float64", "string": "string", "bool": "bool"}.get(
            _go_type_of(value), "slice"
        )
        raise GoTypeError(f"'' expected a map, got '{kind}'")
    decoded = convert(value if value is not None else {}, target, "", target.zero())
    if errors:
        items = "\n".join(f"* {error}" for error in errors)
        raise GoTypeError(f"{len(errors)} error(s) decoding:\n\n{items}")
    return dict(decoded)


# --- the bodies daprd decodes ------------------------------------------------------------------
# Field names, JSON tags and types as daprd declares them (dapr `pkg/runtime/pubsub/
# subscriptions.go`, `pkg/api/http/http.go`; components-contrib `pubsub/responses.go`,
# `state/requests.go`).

_STRING = _named("string", "string")
_STRINGS = _map(_STRING)
_RULE = _struct("pubsub.RuleJSON", ("Match", "match", _STRING), ("Path", "path", _STRING))

#: `GET /dapr/subscribe`: `[]pubsub.SubscriptionJSON`.
SUBSCRIPTIONS = _slice(
    _struct(
        "pubsub.SubscriptionJSON",
        ("PubsubName", "pubsubname", _STRING),
        ("Topic", "topic", _STRING),
        ("DeadLetterTopic", "deadLetterTopic", _STRING),
        ("Metadata", "metadata", _STRINGS),
        ("Route", "route", _STRING),
        (
            "Routes",
            "routes",
            _struct(
                "pubsub.RoutesJSON",
                ("Rules", "rules", _slice(_pointer(_RULE))),
                ("Default", "default", _STRING),
            ),
        ),
        (
            "BulkSubscribe",
            "bulkSubscribe",
            _struct(
                "pubsub.BulkSubscribeJSON",
                ("Enabled", "enabled", _named("bool", "bool")),
                ("MaxMessagesCount", "maxMessagesCount", _named("int", "int32", 32)),
                ("MaxAwaitDurationMs", "maxAwaitDurationMs", _named("int", "int32", 32)),
            ),
        ),
    )
)

_STATUS = _named("string", "pubsub.AppResponseStatus")

#: The app's answer to a delivery: `pubsub.AppResponse`.
APP_RESPONSE = _struct("pubsub.AppResponse", ("Status", "status", _STATUS))

#: The app's answer to a bulk delivery: `pubsub.AppBulkResponse`.
APP_BULK_RESPONSE = _struct(
    "pubsub.AppBulkResponse",
    (
        "AppResponses",
        "statuses",
        _slice(
            _struct(
                "pubsub.AppBulkResponseEntry",
                ("EntryId", "entryId", _STRING),
                ("Status", "status", _STATUS),
            )
        ),
    ),
)

#: A bulk publish: `[]http.bulkPublishMessageEntry`.
BULK_PUBLISH_ENTRIES = _slice(
    _struct(
        "http.bulkPublishMessageEntry",
        ("EntryID", "entryId", _STRING),
        ("Event", "event", _named("any", "interface {}")),
        ("ContentType", "contentType", _STRING),
        ("Metadata", "metadata", _STRINGS),
    )
)

#: One state write: `state.SetRequest` (its options have no JSON tags: their Go names count).
SET_REQUEST = _struct(
    "state.SetRequest",
    ("Key", "key", _STRING),
    ("Value", "value", _named("any", "interface {}")),
    ("ETag", "etag", _pointer(_STRING)),
    ("Metadata", "metadata", _STRINGS),
    (
        "Options",
        "options",
        _struct(
            "state.SetStateOption",
            ("Concurrency", "Concurrency", _STRING),
            ("Consistency", "Consistency", _STRING),
        ),
    ),
    ("ContentType", "contentType", _pointer(_STRING)),
)

#: One state delete in a transaction: `state.DeleteRequest`.
DELETE_REQUEST = _struct(
    "state.DeleteRequest",
    ("Key", "key", _STRING),
    ("ETag", "etag", _pointer(_STRING)),
    ("Metadata", "metadata", _STRINGS),
    (
        "Options",
        "options",
        _struct(
            "state.DeleteStateOption",
            ("Concurrency", "concurrency", _STRING),
            ("Consistency", "consistency", _STRING),
        ),
    ),
)

#: `POST /v1.0/state/{store}`: `[]state.SetRequest`.
STATE_SET_REQUESTS = _slice(SET_REQUEST)

#: `POST /v1.0/state/{store}/bulk`: `http.BulkGetRequest`.
BULK_GET_REQUEST = _struct(
    "http.BulkGetRequest",
    ("Metadata", "metadata", _STRINGS),
    ("Keys", "keys", _slice(_STRING)),
    ("Parallelism", "parallelism", _named("int", "int")),
)

#: `POST /v1.0/state/{store}/transaction`: each `request` is then read by `map_decode`.
TRANSACTION_REQUEST = _struct(
    "http.stateTransactionRequestBody",
    (
        "Operations",
        "operations",
        _slice(
            _struct(
                "http.stateTransactionRequestBodyOperation",
                ("Operation", "operation", _STRING),
                ("Request", "request", _named("any", "interface {}")),
            )
        ),
    ),
    ("Metadata", "metadata", _STRINGS),
)

"""W3C Trace Context to the letter: `traceparent` and `tracestate` as the current specification reads.

`TraceContextPropagator` reads and writes the two headers of W3C Trace Context
(Level 1 Recommendation, with the Level 2 key grammar where the two differ) and
`W3CTraceState` holds a `tracestate` whose keys follow that grammar. They exist
because OpenTelemetry's own propagator checks keys against the older
`tenant@vendor` split (a 241-character tenant, a 14-character vendor, one `@`),
so a list-member the current grammar allows (`t...t@v`, `foo@bar@baz`) makes it
discard the whole `tracestate` it should have passed on.

What `extract` does with each input:

- `traceparent`: optional whitespace around it is ignored. Version `00` must be
  exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version must start that way
  and go on with `-` or end after the flags (its other fields are not read, and
  only the flags this version defines are kept); version `ff`, upper-case hex,
  an all-zero trace id or parent id, or a repeated field make the header
  invalid, and the trace restarts (no parent, `tracestate` not read).
- `tracestate`: repeated fields are combined with commas (RFC 9110 §5.3) before
  they get here. Empty and whitespace-only members are skipped; a key is
  `(lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")`, a value
  up to 256 printable ASCII characters other than `,` and `=` that does not end
  in a space. A member that breaks that grammar, a key seen twice or more than
  32 members make the header unparseable, and the whole of it is discarded (the
  specification allows discarding the entire header; keeping the rest would
  forward a list whose meaning, the position in each tracing system, is broken).

`inject` writes `traceparent` version `00` with only the defined flags
(sampled, random) and `tracestate` when not empty, truncated to
`MAX_TRACESTATE_LENGTH` characters by whole entries, as the specification says
to truncate: entries longer than 128 characters first, then from the end.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

if TYPE_CHECKING:
    from collections.abc import Callable, ItemsView, Iterator, KeysView, Sequence, ValuesView

__all__ = ["MAX_TRACESTATE_LENGTH", "TraceContextPropagator", "W3CTraceState"]

_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"

_MAX_MEMBERS = 32  # "There can be a maximum of 32 list-members in a list."

MAX_TRACESTATE_LENGTH = 4096
"""The longest `tracestate` this propagator sends, in characters.

The specification asks for at least 512 and for any maximum to be documented.
A full list (32 members of a 256-character key and value) is about 16 KiB: sent
on every outgoing call and into Dapr's publish query string, that would outgrow
the 8 KiB header line many proxies accept, and the call would fail because of
its trace context.
"""

_LONG_ENTRY = 128  # "Entries larger than 128 characters long SHOULD be removed first."
_KNOWN_FLAGS = 0x03  # sampled (Level 1) and random (Level 2); others MUST be sent as zero
_OWS = " \t"

_KEY = r"[a-z0-9][a-z0-9_\-*/@]{0,255}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_KEY_RE = re.compile(_KEY)
_VALUE_RE = re.compile(_VALUE)
_MEMBER_RE = re.compile(f"({_KEY})=({_VALUE})")
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_V00_LENGTH = 55
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


def _valid_member(key: object, value: object) -> bool:
    """Whether `key=value` is a list-member the current `tracestate` grammar allows."""
    return (
        isinstance(key, str)
        and isinstance(value, str)
        and _KEY_RE.fullmatch(key) is not None
        and _VALUE_RE.fullmatch(value) is not None
    )


def _parse_tracestate(header: str) -> list[tuple[str, str]] | None:
    """The list-members of a (combined) `tracestate` value, in order; None if it cannot be parsed.

    Empty and whitespace-only members are skipped and do not count towards the
    32: the specification makes vendors accept empty `tracestate` fields, and
    combining one with a full list adds an empty member.
    """
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in header.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue
        match = _MEMBER_RE.fullmatch(member)
        if match is None:
            return None
        key = match.group(1)
        if key in seen or len(members) == _MAX_MEMBERS:
            return None
        seen.add(key)
        members.append((key, match.group(2)))
    return members


def _serialise_tracestate(
    members: Sequence[tuple[str, str]], limit: int = MAX_TRACESTATE_LENGTH
) -> str:
    """`members` as a `tracestate` value of at most `limit` characters, truncated by whole entries.

    Truncation follows the specification: entries longer than 128 characters
    go first (the right-most first), then entries from the end.
    """
    entries = [f"{key}={value}" for key, value in members]
    length = sum(map(len, entries)) + max(len(entries) - 1, 0)
    while length > limit:
        index = len(entries) - 1
        for candidate in range(len(entries) - 1, -1, -1):
            if len(entries[candidate]) > _LONG_ENTRY:
                index = candidate
                break
        length -= len(entries.pop(index)) + (1 if entries else 0)
    return ",".join(entries)


class W3CTraceState(TraceState):
    """An OpenTelemetry `TraceState` whose keys follow the current W3C grammar.

    OpenTelemetry's `TraceState` re-validates every list against the older key
    grammar when it is built, and its `add`, `update` and `delete` build a plain
    `TraceState`, so a key such as `t@vendor-name-15ch` would be dropped on the
    next change. This class keeps its own members and returns its own type.

    Args:
        entries: Key/value pairs, left-most first. Invalid pairs and repeated
            keys are left out; more than 32 pairs make an empty state, as in
            OpenTelemetry.
    """

    def __init__(self, entries: Sequence[tuple[str, str]] | None = None) -> None:
        super().__init__()
        members: dict[str, str] = {}
        if entries is not None and len(entries) <= _MAX_MEMBERS:
            for key, value in entries:
                if _valid_member(key, value) and key not in members:
                    members[key] = value
        self._members = members

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __getitem__(self, key: str) -> str:
        return self._members[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._members.items())!r})"

    def add(self, key: str, value: str) -> W3CTraceState:
        """A new state with `key=value` on the left; unchanged if invalid, present or full."""
        if (
            not _valid_member(key, value)
            or key in self._members
            or len(self._members) >= _MAX_MEMBERS
        ):
            return self
        return W3CTraceState([(key, value), *self._members.items()])

    def update(self, key: str, value: str) -> W3CTraceState:
        """A new state with `key=value` moved to the left (added if absent and there is room)."""
        if not _valid_member(key, value) or (
            key not in self._members and len(self._members) >= _MAX_MEMBERS
        ):
            return self
        rest = [(k, v) for k, v in self._members.items() if k != key]
        return W3CTraceState([(key, value), *rest])

    def delete(self, key: str) -> W3CTraceState:
        """A new state without `key`; unchanged if absent."""
        if key not in self._members:
            return self
        return W3CTraceState([(k, v) for k, v in self._members.items() if k != key])

    def to_header(self) -> str:
        """The members as one `tracestate` value, untruncated."""
        return ",".join(f"{key}={value}" for key, value in self._members.items())

    @classmethod
    def from_header(cls, header_list: list[str]) -> W3CTraceState:
        """Parse one or more `tracestate` fields; a list that cannot be parsed gives an empty state."""
        members = _parse_tracestate(",".join(header_list))
        return cls(members) if members else cls()

    def keys(self) -> KeysView[str]:
        """The keys, left-most first."""
        return self._members.keys()

    def items(self) -> ItemsView[str, str]:
        """The (key, value) pairs, left-most first."""
        return self._members.items()

    def values(self) -> ValuesView[str]:
        """The values, left-most first."""
        return self._members.values()


def _parse_traceparent(header: str) -> tuple[int, int, int] | None:
    """(trace id, parent id, flags) of a `traceparent` value, or None when the trace must restart."""
    value = header.strip(_OWS)
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    if version == "00":
        if len(value) != _TRACEPARENT_V00_LENGTH:
            return None
        return int(trace_id, 16), int(span_id, 16), int(flags, 16)
    # A higher version: its flags end the string or are followed by a dash;
    # fields after them are unknown and not read, flags this version does not
    # define are ignored.
    if len(value) > _TRACEPARENT_V00_LENGTH and value[_TRACEPARENT_V00_LENGTH] != "-":
        return None
    return int(trace_id, 16), int(span_id, 16), int(flags, 16) & _KNOWN_FLAGS


class TraceContextPropagator(textmap.TextMapPropagator):
    """Extract and inject `traceparent` and `tracestate` as W3C Trace Context specifies.

    A drop-in for OpenTelemetry's `TraceContextTextMapPropagator`; see the module
    for what is accepted, combined and dropped. `configure()` installs it (with
    W3C baggage) unless `OTEL_PROPAGATORS` is set; name it there as
    `todo_tracecontext`: `OTEL_PROPAGATORS=todo_tracecontext,baggage`.
    """

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """The context with the remote parent of `carrier`, or `context` unchanged when there is none."""
        if context is None:
            context = Context()
        fields = getter.get(carrier, _TRACEPARENT)
        # Two traceparent fields (or a value combined from them) name no single parent.
        if not fields or len(fields) != 1 or "," in fields[0]:
            return context
        parsed = _parse_traceparent(fields[0])
        if parsed is None:
            return context
        trace_id, span_id, flags = parsed
        states = getter.get(carrier, _TRACESTATE)
        trace_state = W3CTraceState.from_header(list(states)) if states else W3CTraceState()
        span_context = SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=TraceFlags(flags),
            trace_state=trace_state,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write the current (or `context`'s) span as `traceparent`, and its `tracestate`."""
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        flags = span_context.trace_flags & _KNOWN_FLAGS
        setter.set(
            carrier,
            _TRACEPARENT,
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}",
        )
        state = span_context.trace_state
        if state:
            header = _serialise_tracestate(
                [(k, v) for k, v in state.items() if _valid_member(k, v)][:_MAX_MEMBERS]
            )
            if header:
                setter.set(carrier, _TRACESTATE, header)

    @property
    def fields(self) -> set[str]:
        """The headers `inject` writes."""
        return {_TRACEPARENT, _TRACESTATE}


def _add_field(carrier: dict[str, str], name: str, value: str) -> None:
    """Add one header field to `carrier`, combining a repeated field as RFC 9110 §5.3 says.

    A repeated field's values are joined with commas, in order (`tracestate`,
    `baggage`: lists by definition). A repeated `traceparent` is a singleton sent
    twice: it becomes empty, which every propagator reads as no parent, so the
    trace restarts as W3C Trace Context asks. `name` is lower-case.
    """
    previous = carrier.get(name)
    if previous is None:
        carrier[name] = value
    elif name == _TRACEPARENT:
        carrier[name] = ""
    else:
        carrier[name] = f"{previous},{value}"


class _Installed:
    """The global propagator `configure()` installed, and what it replaced."""

    ours: textmap.TextMapPropagator | None = None
    previous: textmap.TextMapPropagator | None = None
    users = 0


def _install_default_propagator() -> Callable[[], None] | None:
    """Make `TraceContextPropagator` (with W3C baggage) the global one, unless the user chose.

    The user chose when `OTEL_PROPAGATORS` is set (OpenTelemetry has built the
    global propagator from it), or when the global propagator is not the one
    OpenTelemetry builds by default (tracecontext, baggage). Returns what undoes
    it: the previous propagator comes back once every service that installed
    ours has shut down, unless someone replaced ours meanwhile.
    """
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    from todo_observability._propagate import propagate

    chosen = os.environ.get("OTEL_PROPAGATORS", "").strip()
    if chosen:
        names = {name.strip().lower() for name in chosen.split(",")}
        if "baggage" not in names and "none" not in names:
            _warn_no_baggage(chosen)
        return None
    current = propagate.get_global_textmap()
    if current is not _Installed.ours:
        if not _is_opentelemetry_default(current):
            return None
        ours = CompositePropagator([TraceContextPropagator(), W3CBaggagePropagator()])
        _Installed.ours, _Installed.previous, _Installed.users = ours, current, 0
        propagate.set_global_textmap(ours)
    _Installed.users += 1
    done = False

    def restore() -> None:
        nonlocal done
        if done:
            return
        done = True
        _Installed.users -= 1
        if _Installed.users == 0:
            if propagate.get_global_textmap() is _Installed.ours and _Installed.previous:
                propagate.set_global_textmap(_Installed.previous)
            _Installed.ours = _Installed.previous = None

    return restore


_warned: set[str] = set()


def _warn_no_baggage(chosen: str) -> None:
    """Say once that without a baggage propagator the correlation ids stop at this service."""
    if chosen in _warned:
        return
    _warned.add(chosen)
    logging.getLogger("todo_observability.propagation").warning(
        "OTEL_PROPAGATORS=%s has no baggage propagator: request_id and user_id travel in W3C "
        "baggage, so they stop at this service and the next one starts its own; add baggage "
        "(OTEL_PROPAGATORS=%s,baggage)",
        chosen,
        chosen,
    )


def _is_opentelemetry_default(propagator: textmap.TextMapPropagator) -> bool:
    """Whether `propagator` is what OpenTelemetry builds without `OTEL_PROPAGATORS`."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # CompositePropagator exposes its parts only as this attribute.
    parts = getattr(propagator, "_propagators", None)
    return (
        type(propagator) is CompositePropagator
        and isinstance(parts, list)
        and [type(part) for part in parts] == [TraceContextTextMapPropagator, W3CBaggagePropagator]
    )

"""Expected trace flows and a checker that compares them with real Zipkin v2 spans.

A `Flow` is a root step and the steps expected below it, each a span (service, kind, name) with
its expected place in the tree. `check_flows` groups spans by trace, picks the trace that matches
each flow best, and reports missing services, missing spans, broken parent links and slow traces.
`todo-obs verify-traces` runs it against a span file or a Zipkin server.

A flow may continue in another trace: a Dapr job trigger carries no `traceparent`, so it starts a
new trace linked to the scheduling span. Zipkin v2 has no field for links, so the continuation is
found by a tag both spans carry (`Step(follows="schedule", join_tag="dapr.job.name")`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from todo_observability.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_SLOW_SECONDS",
    "Flow",
    "FlowReport",
    "Step",
    "check_flows",
    "load_flows",
    "trace_duration_seconds",
]

DEFAULT_SLOW_SECONDS = 1.0
"""A trace longer than this (first span start to last span end) is reported as slow."""

KINDS = ("SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL")

Span = Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    """One expected span of a flow, and where it must sit in the trace.

    Names and tag values are shell-style patterns (`*`, `?`), matched case-insensitively because
    Zipkin stores span and service names in lower case.

    Attributes:
        key: Short name of the step, for other steps' `parent`, `descendant_of` and `follows`.
        service: The span's `localEndpoint.serviceName` (the Dapr app id).
        name: The span name, or a pattern.
        kind: SERVER, CLIENT, PRODUCER, CONSUMER or INTERNAL (a span without `kind`).
        parent: The step(s) whose span must be this span's direct parent; several keys mean
            any of them (a consumer's parent is the sidecar's delivery span, or the producer
            when the sidecar does not trace).
        descendant_of: A step whose span must be an ancestor at any depth (hops in between
            may vary, such as the sidecars' spans).
        follows: A step of another trace this step's trace continues; this step is then the
            root of its own trace, found by `join_tag`.
        join_tag: With `follows`: the tag whose value this span shares with the followed span.
        tags: Tags the span must carry (values are patterns).
        optional: The span may be absent (a sidecar span when the sidecar's tracing is off).
    """

    key: str
    service: str
    name: str
    kind: str = "INTERNAL"
    parent: tuple[str, ...] = ()
    descendant_of: str | None = None
    follows: str | None = None
    join_tag: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    optional: bool = False

    def __post_init__(self) -> None:
        parent: object = self.parent
        if isinstance(parent, str):
            # Step(parent="x") is an easy slip for parent=("x",): take it as meant.
            object.__setattr__(self, "parent", (parent,))
        if self.kind not in KINDS:
            raise _flow_error(
                f"step {self.key!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}.",
                self.kind,
            )
        if bool(self.follows) != bool(self.join_tag):
            raise _flow_error(
                f"step {self.key!r}: `follows` and `join_tag` go together (the tag whose value "
                f"the two spans share), got follows={self.follows!r}, join_tag={self.join_tag!r}.",
                self.join_tag,
            )
        relations = bool(self.parent) + bool(self.descendant_of) + bool(self.follows)
        if relations > 1:
            raise _flow_error(
                f"step {self.key!r}: give one of parent, descendant_of or follows, not several.",
                self.key,
            )

    def describe(self) -> str:
        """`service KIND name`, the way `todo-obs trace` prints a span."""
        return f"{self.service} {self.kind} {self.name}"

    def matches(self, span: Span) -> bool:
        """Whether `span` has this step's service, kind, name and tags."""
        if _service(span) != self.service.lower() or _kind(span) != self.kind:
            return False
        if not fnmatch.fnmatchcase(str(span.get("name") or "").lower(), self.name.lower()):
            return False
        tags = span.get("tags") or {}
        return all(
            key in tags and fnmatch.fnmatchcase(str(tags[key]), pattern)
            for key, pattern in self.tags.items()
        )


@dataclass(frozen=True)
class Flow:
    """An expected flow: its first step is the root span of a trace, the others follow it.

    Attributes:
        name: Short name, used in reports.
        description: What the flow is, in a sentence.
        steps: The root step first; every step names only steps listed before it.
    """

    name: str
    description: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise _flow_error(f"flow {self.name!r} has no steps.", self.name)
        root = self.steps[0]
        if root.parent or root.descendant_of or root.follows or root.optional:
            raise _flow_error(
                f"flow {self.name!r}: the first step {root.key!r} is the trace's root; "
                "it has no parent, descendant_of or follows and is not optional.",
                root.key,
            )
        seen: set[str] = set()
        for step in self.steps:
            if step.key in seen:
                raise _flow_error(f"flow {self.name!r}: step key {step.key!r} repeats.", step.key)
            for other in (*step.parent, step.descendant_of, step.follows):
                if other is not None and other not in seen:
                    raise _flow_error(
                        f"flow {self.name!r}: step {step.key!r} refers to {other!r}, which is "
                        "not a step listed before it.",
                        other,
                    )
            seen.add(step.key)

    @property
    def root(self) -> Step:
        """The step that matches the trace's root span."""
        return self.steps[0]

    @property
    def services(self) -> list[str]:
        """The services the flow needs (those of its non-optional steps), in step order."""
        return list(dict.fromkeys(s.service for s in self.steps if not s.optional))


@dataclass
class FlowReport:
    """What `check_flows` found for one flow.

    Attributes:
        flow: The flow's name.
        description: The flow's description.
        candidates: How many traces have a root span matching the flow's root step.
        trace_ids: The best candidate trace, then the traces it continues in.
        trace_seconds: The duration of each of `trace_ids`.
        spans: Step key to the span id found for it, in the best candidate.
        missing_services: Services of the flow with no span in its traces; `known` is False
            when the source has never seen the service at all.
        missing_spans: Steps with no matching span.
        broken_links: Spans whose parent is not in the trace, or not the expected step.
        slow_traces: Candidate traces longer than the threshold, slowest first.
    """

    flow: str
    description: str
    candidates: int = 0
    trace_ids: list[str] = field(default_factory=list)
    trace_seconds: list[float] = field(default_factory=list)
    spans: dict[str, str] = field(default_factory=dict)
    missing_services: list[dict[str, Any]] = field(default_factory=list)
    missing_spans: list[dict[str, Any]] = field(default_factory=list)
    broken_links: list[dict[str, Any]] = field(default_factory=list)
    slow_traces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        """A trace of the flow was found with every service, span and parent link expected."""
        return bool(
            self.candidates
            and not self.missing_services
            and not self.missing_spans
            and not self.broken_links
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with `intact` included."""
        return {**dataclasses.asdict(self), "intact": self.intact}


def _flow_error(message: str, value: object) -> ConfigurationError:
    return ConfigurationError(message, field="flows", env_var=None, value=value)


def _service(span: Span) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "").lower()


def _kind(span: Span) -> str:
    return str(span.get("kind") or "INTERNAL").upper()


def _describe(span: Span) -> str:
    return f"{_service(span) or '?'} {_kind(span)} {span.get('name', '')}"


def trace_duration_seconds(spans: Iterable[Span]) -> float:
    """From the first span's start to the last span's end, in seconds (0 without timestamps)."""
    timed = [s for s in spans if isinstance(s.get("timestamp"), int)]
    if not timed:
        return 0.0
    start = min(int(s["timestamp"]) for s in timed)
    end = max(int(s["timestamp"]) + int(s.get("duration") or 0) for s in timed)
    return (end - start) / 1_000_000


class _Traces:
    """Spans grouped by trace, with parent lookups."""

    def __init__(self, spans: Iterable[Span]) -> None:
        self.by_trace: dict[str, list[Span]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        for span in spans:
            trace_id, span_id = str(span.get("traceId", "")), str(span.get("id", ""))
            # The same span can come twice (exported by two paths, or listed by two queries).
            if not trace_id or (trace_id, span_id) in seen:
                continue
            seen.add((trace_id, span_id))
            self.by_trace[trace_id.lower()].append(span)
        self.by_id = {
            trace_id: {str(s["id"]): s for s in spans} for trace_id, spans in self.by_trace.items()
        }

    def roots(self, step: Step) -> list[str]:
        """Traces whose root span (no parentId) matches `step`, most recent first."""
        found = [
            (self.start(trace_id), trace_id)
            for trace_id, spans in self.by_trace.items()
            if any(not s.get("parentId") and step.matches(s) for s in spans)
        ]
        return [trace_id for _, trace_id in sorted(found, reverse=True)]

    def start(self, trace_id: str) -> int:
        return min((int(s.get("timestamp") or 0) for s in self.by_trace[trace_id]), default=0)

    def parent(self, trace_id: str, span: Span) -> Span | None:
        return self.by_id[trace_id].get(str(span.get("parentId") or ""))

    def ancestors(self, trace_id: str, span: Span) -> list[str]:
        found: list[str] = []
        current = self.parent(trace_id, span)
        while current is not None and str(current["id"]) not in found:
            found.append(str(current["id"]))
            current = self.parent(trace_id, current)
        return found


@dataclass
class _Walk:
    """One way of matching a flow's steps to spans: the spans chosen and the problems seen."""

    assigned: dict[str, tuple[str, Span]] = field(default_factory=dict)
    trace_ids: list[str] = field(default_factory=list)
    missing_spans: list[dict[str, Any]] = field(default_factory=list)
    broken_links: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> _Walk:
        return _Walk(
            dict(self.assigned),
            list(self.trace_ids),
            list(self.missing_spans),
            list(self.broken_links),
        )

    @property
    def problems(self) -> int:
        return len(self.missing_spans) + len(self.broken_links)


def _missing(step: Step, expected: str, detail: str = "") -> dict[str, Any]:
    return {
        "step": step.key,
        "service": step.service,
        "kind": step.kind,
        "name": step.name,
        "expected": expected,
        "detail": detail,
    }


def _expected_place(step: Step, steps: Mapping[str, Step]) -> str:
    if step.parent:
        return "child of " + " or ".join(steps[key].describe() for key in step.parent)
    if step.descendant_of:
        return "below " + steps[step.descendant_of].describe()
    if step.follows:
        return f"root of a trace sharing {step.join_tag} with {steps[step.follows].describe()}"
    return "root of the trace"


def _walk(flow: Flow, traces: _Traces, index: int, walk: _Walk, steps: Mapping[str, Step]) -> _Walk:
    """Match steps from `index` on; at a continuation, try every candidate trace, keep the best."""
    while index < len(flow.steps):
        step = flow.steps[index]
        if step.follows:
            return _continue(flow, traces, index, walk, steps)
        _place(step, traces, walk, steps)
        index += 1
    return walk


def _continue(
    flow: Flow, traces: _Traces, index: int, walk: _Walk, steps: Mapping[str, Step]
) -> _Walk:
    step = flow.steps[index]
    assert step.follows is not None  # checked by Step
    assert step.join_tag is not None
    followed = walk.assigned.get(step.follows)
    value = ((followed[1].get("tags") or {}).get(step.join_tag)) if followed else None
    candidates = [
        trace_id
        for trace_id in traces.roots(step)
        if value is not None
        and any(
            not s.get("parentId") and (s.get("tags") or {}).get(step.join_tag) == value
            for s in traces.by_trace[trace_id]
        )
    ]
    if not candidates:
        rest = walk.copy()
        detail = (
            f"no trace whose root has {step.join_tag}={value!r}"
            if value is not None
            else f"the followed span has no {step.join_tag} tag"
            if followed
            else "the followed step is missing"
        )
        rest.missing_spans.append(_missing(step, _expected_place(step, steps), detail))
        return _walk(flow, traces, index + 1, rest, steps)
    best: _Walk | None = None
    for trace_id in candidates:
        attempt = walk.copy()
        attempt.trace_ids.append(trace_id)
        root = next(s for s in traces.by_trace[trace_id] if not s.get("parentId"))
        attempt.assigned[step.key] = (trace_id, root)
        attempt = _walk(flow, traces, index + 1, attempt, steps)
        if best is None or attempt.problems < best.problems:
            best = attempt
    assert best is not None
    return best


def _place(step: Step, traces: _Traces, walk: _Walk, steps: Mapping[str, Step]) -> None:
    """Find `step`'s span in the trace of the step it hangs from; record what is wrong."""
    anchors = [
        walk.assigned[key] for key in (*step.parent, step.descendant_of) if key in walk.assigned
    ]
    related = [key for key in (*step.parent, step.descendant_of) if key]
    if related and not anchors:
        # Its parent step is missing (already reported): look where the flow's traces are.
        trace_ids = walk.trace_ids
    else:
        trace_ids = list(dict.fromkeys(trace_id for trace_id, _ in anchors))
    candidates = [
        (trace_id, span)
        for trace_id in trace_ids
        for span in traces.by_trace[trace_id]
        if step.matches(span)
    ]
    candidates.sort(key=lambda pair: int(pair[1].get("timestamp") or 0))
    anchor_ids = {str(span["id"]) for _, span in anchors}
    if not anchors:
        good = candidates
    elif step.parent:
        good = [(t, s) for t, s in candidates if str(s.get("parentId") or "") in anchor_ids]
    else:
        good = [(t, s) for t, s in candidates if anchor_ids & set(traces.ancestors(t, s))]
    if good:
        walk.assigned[step.key] = good[0]
        return
    if not candidates:
        if not step.optional:
            walk.missing_spans.append(_missing(step, _expected_place(step, steps)))
        return
    trace_id, span = candidates[0]
    if step.optional:
        # An optional span in the wrong place is not the expected hop; leave it unmatched.
        return
    walk.assigned[step.key] = (trace_id, span)
    parent = traces.parent(trace_id, span)
    walk.broken_links.append(
        {
            "step": step.key,
            "trace_id": trace_id,
            "span_id": str(span["id"]),
            "span": _describe(span),
            "parent_id": span.get("parentId"),
            "problem": (
                f"its parent is {_describe(parent)}"
                if parent is not None
                else f"its parentId {span.get('parentId')!r} is not in the trace"
                if span.get("parentId")
                else "it has no parent"
            ),
            "expected": _expected_place(step, steps),
        }
    )


def _orphans(traces: _Traces, trace_ids: Sequence[str], reported: set[str]) -> list[dict[str, Any]]:
    """Spans whose parentId names no span of their trace (a lost or unsampled parent)."""
    found = []
    for trace_id in trace_ids:
        for span in traces.by_trace[trace_id]:
            parent_id = span.get("parentId")
            if parent_id and traces.parent(trace_id, span) is None and span["id"] not in reported:
                found.append(
                    {
                        "step": None,
                        "trace_id": trace_id,
                        "span_id": str(span["id"]),
                        "span": _describe(span),
                        "parent_id": parent_id,
                        "problem": f"its parentId {parent_id!r} is not in the trace",
                        "expected": "a parent in the same trace",
                    }
                )
    return found


def check_flows(
    flows: Iterable[Flow],
    spans: Iterable[Span],
    *,
    services: Iterable[str] | None = None,
    slow_seconds: float = DEFAULT_SLOW_SECONDS,
) -> list[FlowReport]:
    """Check each flow against Zipkin v2 spans; one report per flow, in order.

    Args:
        flows: The expected flows.
        spans: Zipkin v2 spans (dicts) of any traces, in any order.
        services: Every service name the source knows (Zipkin's `/api/v2/services`); default:
            the services of `spans`. A flow's service missing here is reported as unknown.
        slow_seconds: Traces longer than this are reported in `slow_traces`.

    Returns:
        One `FlowReport` per flow. For each, the trace whose root matches the flow's root step
        and that has the fewest problems (the most recent among equals) is the one reported.
    """
    spans = list(spans)
    traces = _Traces(spans)
    known = (
        {name.lower() for name in services}
        if services is not None
        else {_service(span) for span in spans}
    )
    reports = []
    for flow in flows:
        steps = {step.key: step for step in flow.steps}
        report = FlowReport(flow.name, flow.description)
        candidates = traces.roots(flow.root)
        report.candidates = len(candidates)
        best: _Walk | None = None
        for trace_id in candidates:
            walk = _Walk(trace_ids=[trace_id])
            root = next(
                s
                for s in traces.by_trace[trace_id]
                if not s.get("parentId") and flow.root.matches(s)
            )
            walk.assigned[flow.root.key] = (trace_id, root)
            walk = _walk(flow, traces, 1, walk, steps)
            reported = {link["span_id"] for link in walk.broken_links}
            walk.broken_links += _orphans(traces, walk.trace_ids, reported)
            if best is None or walk.problems < best.problems:
                best = walk
        if best is None:
            report.missing_spans = [
                _missing(flow.root, "root of the trace", "no trace has this root span")
            ]
            seen_services: set[str] = set()
        else:
            report.trace_ids = best.trace_ids
            report.trace_seconds = [
                round(trace_duration_seconds(traces.by_trace[t]), 6) for t in best.trace_ids
            ]
            report.spans = {key: str(span["id"]) for key, (_, span) in best.assigned.items()}
            report.missing_spans = best.missing_spans
            report.broken_links = best.broken_links
            seen_services = {_service(s) for t in best.trace_ids for s in traces.by_trace[t]}
        report.missing_services = [
            {"service": service, "known": service.lower() in known}
            for service in flow.services
            if service.lower() not in seen_services
        ]
        checked = list(dict.fromkeys([*candidates, *report.trace_ids]))
        slow = [
            {"trace_id": trace_id, "seconds": round(seconds, 3)}
            for trace_id in checked
            if (seconds := trace_duration_seconds(traces.by_trace[trace_id])) > slow_seconds
        ]
        report.slow_traces = sorted(slow, key=lambda row: -float(row["seconds"]))
        reports.append(report)
    return reports


_STEP_FIELDS = {f.name for f in dataclasses.fields(Step)}


def _flows_from_data(data: Any, origin: str) -> list[Flow]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise _flow_error(f"{origin}: expected a list of flows, got {type(data).__name__}.", data)
    flows = []
    for number, item in enumerate(data, 1):
        if not isinstance(item, dict) or not isinstance(item.get("steps"), list):
            raise _flow_error(
                f"{origin}: flow {number} must be an object with name, description and a list "
                f"of steps, got {item!r}.",
                item,
            )
        steps = []
        for raw in item["steps"]:
            unknown = set(raw) - _STEP_FIELDS if isinstance(raw, dict) else set()
            if not isinstance(raw, dict) or unknown:
                raise _flow_error(
                    f"{origin}: flow {item.get('name')!r}: a step is an object with keys among "
                    f"{', '.join(sorted(_STEP_FIELDS))}; got {raw!r}.",
                    raw,
                )
            if isinstance(raw.get("parent"), list):
                raw = {**raw, "parent": tuple(raw["parent"])}
            try:
                steps.append(Step(**raw))
            except TypeError as exc:
                raise _flow_error(f"{origin}: step {raw!r}: {exc}.", raw) from None
        flows.append(
            Flow(
                str(item.get("name", f"flow {number}")),
                str(item.get("description", "")),
                tuple(steps),
            )
        )
    return flows


def load_flows(spec: str) -> list[Flow]:
    """The flows named by `spec`: `package.module:ATTRIBUTE`, or a JSON file of flows.

    Args:
        spec: `module:attribute` (a `Flow` or a sequence of them), or the path of a JSON file
            holding a list of `{"name", "description", "steps": [{Step fields}]}`.

    Returns:
        The flows.

    Raises:
        ConfigurationError: `spec` names nothing importable or readable, or holds no flows.
    """
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _flow_error(f"cannot read flows file {spec!r}: {exc.strerror}.", spec) from None
        except json.JSONDecodeError as exc:
            raise _flow_error(f"{spec}: not JSON ({exc}).", spec) from None
        return _flows_from_data(data, spec)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise _flow_error(
            f"flows must be given as module:attribute or a .json file, got {spec!r} "
            "(e.g. --flows reference_app.ops.flows:FLOWS).",
            spec,
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _flow_error(
            f"cannot import {module_name!r} for flows {spec!r}: {exc}.", spec
        ) from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise _flow_error(f"module {module_name!r} has no attribute {attribute!r}.", spec) from None
    flows = [value] if isinstance(value, Flow) else list(value)
    if not flows or not all(isinstance(flow, Flow) for flow in flows):
        raise _flow_error(f"{spec} must be a Flow or a non-empty sequence of Flow objects.", spec)
    return flows

"""`todo-obs verify-traces` and the flow checker, on the spans of the real reference scenario.

The scenario runs once (`python -m reference_app`, real processes) with its spans exported both to
the span file and to a Zipkin emulator served over HTTP. The checker must find both flows intact
in each; the negative cases edit those real spans (a service, a span, a parent link removed,
durations inflated) and check that each problem is reported, from a file and through Zipkin.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reference_app.ops.flows import FLOWS, NEXT_OCCURRENCE, REMINDER
from tests.reference_app.harness import run_system
from todo_observability.cli import main
from todo_observability.exceptions import ConfigurationError
from todo_observability.ops.spans import load_spans
from todo_observability.ops.traceflows import Flow, Step, check_flows, load_flows
from todo_observability.testing.zipkin import ZipkinEmulator

ROOT = Path(__file__).resolve().parents[2]
FLOWS_SPEC = "reference_app.ops.flows:FLOWS"

pytestmark = pytest.mark.slow


@dataclass
class Scenario:
    """What one run of the reference scenario left: its output, span file and Zipkin copy."""

    output: str
    span_file: Path
    spans: list[dict[str, Any]]
    zipkin: ZipkinEmulator
    zipkin_url: str


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Run `python -m reference_app` once, exporting to a span file and to the Zipkin emulator."""
    zipkin = ZipkinEmulator()
    with zipkin.serve() as url:
        data = tmp_path_factory.mktemp("scenario") / "data"
        output = run_system(data, "--zipkin-endpoint", f"{url}/api/v2/spans")
        span_file = data / "spans.jsonl"
        yield Scenario(output, span_file, load_spans(span_file), zipkin, url)


@pytest.fixture(scope="module")
def edited_zipkin() -> Iterator[tuple[ZipkinEmulator, str]]:
    """A second emulator, over HTTP, that each negative case fills with its edited spans."""
    zipkin = ZipkinEmulator()
    with zipkin.serve() as url:
        yield zipkin, url


def verify(*args: str) -> tuple[int, str]:
    """Run `todo-obs verify-traces ARGS`; the exit status and what it printed."""
    out = io.StringIO()
    status = main(["verify-traces", *args], out=out)
    return status, out.getvalue()


Verify = Callable[..., tuple[int, list[dict[str, Any]]]]


@pytest.fixture(params=["spans", "zipkin"])
def verify_edited(
    request: pytest.FixtureRequest, tmp_path: Path, edited_zipkin: tuple[ZipkinEmulator, str]
) -> Verify:
    """Check edited spans from a span file, or from Zipkin after POSTing them; (status, reports)."""

    def run(spans: list[dict[str, Any]], *extra: str) -> tuple[int, list[dict[str, Any]]]:
        if request.param == "spans":
            path = tmp_path / "edited.jsonl"
            path.write_text(json.dumps(spans) + "\n")
            source = ["--spans", str(path)]
        else:
            zipkin, url = edited_zipkin
            zipkin.clear()
            zipkin.add(spans)
            source = ["--zipkin", url, "--lookback", "1d"]
        status, output = verify(*source, "--flows", FLOWS_SPEC, "--json", *extra)
        return status, json.loads(output)

    return run


def report_of(reports: list[dict[str, Any]], flow: Flow) -> dict[str, Any]:
    [report] = [r for r in reports if r["flow"] == flow.name]
    return report


def service_of(span: dict[str, Any]) -> str:
    return str(span["localEndpoint"]["serviceName"])


def completion_trace_id(scenario: Scenario) -> str:
    match = re.search(r"The completion's trace \(([0-9a-f]{32})\)", scenario.output)
    assert match, scenario.output
    return match[1]


def intact_reports(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The reports of the unedited spans, by flow name (the edits start from these)."""
    return {report.flow: report for report in check_flows(FLOWS, spans)}


# The real scenario, unedited.


def test_both_flows_are_intact_in_the_scenario_span_file(scenario: Scenario) -> None:
    status, output = verify("--spans", str(scenario.span_file), "--flows", FLOWS_SPEC)

    assert status == 0, output
    assert f"✓ {NEXT_OCCURRENCE.name}: intact" in output
    assert f"✓ {REMINDER.name}: intact" in output
    assert "2 of 2 flows intact" in output
    # The completion flow is the trace the scenario itself showed.
    assert f"trace {completion_trace_id(scenario)} (" in output


def test_both_flows_are_intact_through_zipkin(scenario: Scenario) -> None:
    status, output = verify("--zipkin", scenario.zipkin_url, "--flows", FLOWS_SPEC, "--json")

    assert status == 0, output
    reports = json.loads(output)
    assert [r["intact"] for r in reports] == [True, True]
    assert report_of(reports, NEXT_OCCURRENCE)["trace_ids"] == [completion_trace_id(scenario)]
    from_file = intact_reports(scenario.spans)
    for flow in FLOWS:
        assert report_of(reports, flow)["trace_ids"] == from_file[flow.name].trace_ids
        assert report_of(reports, flow)["spans"] == from_file[flow.name].spans
    # The reminder flow continues in the job trigger's own trace.
    assert len(report_of(reports, REMINDER)["trace_ids"]) == 2


def test_zipkin_received_the_spans_of_the_file_with_names_in_lower_case(
    scenario: Scenario,
) -> None:
    received = {(s["traceId"], s["id"]): s for s in scenario.zipkin.spans}
    written = {(s["traceId"], s["id"]): s for s in scenario.spans}

    assert received.keys() == written.keys()
    for key, span in written.items():
        assert received[key]["name"] == span["name"].lower()
        assert service_of(received[key]) == service_of(span)
        assert received[key].get("parentId") == span.get("parentId")


def test_every_expected_step_is_matched_to_a_span_of_the_right_service(scenario: Scenario) -> None:
    spans = {s["id"]: s for s in scenario.spans}
    for flow in FLOWS:
        report = intact_reports(scenario.spans)[flow.name]
        for step in flow.steps:
            span = spans[report.spans[step.key]]
            assert (service_of(span), span.get("kind") or "INTERNAL") == (step.service, step.kind)


# Negative cases, built by editing the real spans.


def test_a_removed_service_is_reported_missing(scenario: Scenario, verify_edited: Verify) -> None:
    spans = [s for s in scenario.spans if service_of(s) != "notification-service"]

    status, reports = verify_edited(spans)

    assert status == 1
    reminder = report_of(reports, REMINDER)
    assert reminder["missing_services"] == [{"service": "notification-service", "known": False}]
    assert {m["step"] for m in reminder["missing_spans"]} == {
        "consume",
        "schedule",
        "trigger",
        "send-mail",
        "mark-sent",
        "backend-sent",
    }
    # The completion flow does not need notification-service: still intact.
    assert report_of(reports, NEXT_OCCURRENCE)["intact"] is True


def test_a_removed_span_is_reported_missing_and_its_children_orphaned(
    scenario: Scenario, verify_edited: Verify
) -> None:
    before = intact_reports(scenario.spans)[REMINDER.name]
    removed = before.spans["consume"]
    spans = [s for s in scenario.spans if s["id"] != removed]

    status, reports = verify_edited(spans)

    assert status == 1
    reminder = report_of(reports, REMINDER)
    assert [m["step"] for m in reminder["missing_spans"]] == ["consume"]
    assert reminder["missing_spans"][0]["expected"].startswith(
        "child of notification-service CLIENT pubsub/reminders"
    )
    # Every child of the removed span is orphaned: the schedule step, and the SQL statements
    # the consumer ran (instrument_sqlalchemy).
    orphans = {orphan["span_id"]: orphan for orphan in reminder["broken_links"]}
    assert before.spans["schedule"] in orphans
    for orphan in orphans.values():
        assert orphan["parent_id"] == removed
        assert "not in the trace" in orphan["problem"]
    assert reminder["missing_services"] == []


def test_a_broken_parent_id_is_reported(scenario: Scenario, verify_edited: Verify) -> None:
    before = intact_reports(scenario.spans)[NEXT_OCCURRENCE.name]
    spans = copy.deepcopy(scenario.spans)
    [calculate] = [s for s in spans if s["id"] == before.spans["calculate"]]
    calculate["parentId"] = "0123456789abcdef"

    status, reports = verify_edited(spans)

    assert status == 1
    completion = report_of(reports, NEXT_OCCURRENCE)
    assert completion["missing_spans"] == []
    [link] = completion["broken_links"]
    assert link["step"] == "calculate"
    assert link["problem"] == "its parentId '0123456789abcdef' is not in the trace"
    assert link["expected"] == "child of recurring-task-service CONSUMER task-events process"
    assert report_of(reports, REMINDER)["intact"] is True


def test_a_span_under_the_wrong_parent_is_reported(
    scenario: Scenario, verify_edited: Verify
) -> None:
    before = intact_reports(scenario.spans)[NEXT_OCCURRENCE.name]
    spans = copy.deepcopy(scenario.spans)
    [publish] = [s for s in spans if s["id"] == before.spans["publish"]]
    publish["parentId"] = before.spans["complete"]

    status, reports = verify_edited(spans)

    assert status == 1
    [link] = report_of(reports, NEXT_OCCURRENCE)["broken_links"]
    assert link["step"] == "publish"
    assert (
        link["problem"].lower()
        == "its parent is frontend server post /api/tasks/{task_id}/complete"
    )


def test_a_consumer_parented_by_the_producer_is_intact_when_the_sidecar_does_not_trace(
    scenario: Scenario, verify_edited: Verify
) -> None:
    # DAPR.md §1.5: without the sidecar's delivery span, the CloudEvent's traceparent (the
    # producer's span) is the consumer's parent.
    before = intact_reports(scenario.spans)[NEXT_OCCURRENCE.name]
    spans = [copy.deepcopy(s) for s in scenario.spans if s["id"] != before.spans["deliver"]]
    [consume] = [s for s in spans if s["id"] == before.spans["consume"]]
    consume["parentId"] = before.spans["publish"]

    status, reports = verify_edited(spans)

    assert status == 0, reports
    completion = report_of(reports, NEXT_OCCURRENCE)
    assert completion["intact"] is True
    assert "deliver" not in completion["spans"]


def test_inflated_durations_are_reported_as_slow_but_fail_only_on_request(
    scenario: Scenario, verify_edited: Verify
) -> None:
    trace_id = completion_trace_id(scenario)
    spans = copy.deepcopy(scenario.spans)
    for span in spans:
        if span["traceId"] == trace_id:
            span["duration"] = span["duration"] * 10 + 1_500_000

    status, reports = verify_edited(spans)

    assert status == 0
    completion = report_of(reports, NEXT_OCCURRENCE)
    assert completion["intact"] is True
    [slow] = completion["slow_traces"]
    assert slow["trace_id"] == trace_id
    assert slow["seconds"] > 1.5
    assert verify_edited(spans, "--fail-on-slow")[0] == 1
    relaxed_status, relaxed = verify_edited(spans, "--slow", "1h", "--fail-on-slow")
    assert relaxed_status == 0
    assert report_of(relaxed, NEXT_OCCURRENCE)["slow_traces"] == []


def test_a_missing_trigger_trace_breaks_the_reminder_flow(
    scenario: Scenario, verify_edited: Verify
) -> None:
    trigger_trace = intact_reports(scenario.spans)[REMINDER.name].trace_ids[1]
    spans = [s for s in scenario.spans if s["traceId"] != trigger_trace]

    status, reports = verify_edited(spans)

    assert status == 1
    reminder = report_of(reports, REMINDER)
    assert [m["step"] for m in reminder["missing_spans"]] == [
        "trigger",
        "send-mail",
        "mark-sent",
        "backend-sent",
    ]
    assert reminder["missing_spans"][0]["detail"].startswith(
        "no trace whose root has dapr.job.name="
    )


def test_the_text_report_names_each_problem(scenario: Scenario, tmp_path: Path) -> None:
    before = intact_reports(scenario.spans)[REMINDER.name]
    spans = [s for s in scenario.spans if s["id"] != before.spans["consume"]]
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(spans) + "\n")

    status, output = verify("--spans", str(path), "--flows", FLOWS_SPEC)

    assert status == 1
    # The missing span, and one broken link per child it had (the schedule, the consumer's SQL).
    children = [s for s in scenario.spans if s.get("parentId") == before.spans["consume"]]
    assert f"✗ {REMINDER.name}: {1 + len(children)} problems" in output
    assert "missing span: notification-service CONSUMER reminders process" in output
    assert (
        f"broken link: notification-service PRODUCER reminder schedule [{before.spans['schedule']}]"
        in output
    )
    assert "1 of 2 flows intact" in output


# Flows from elsewhere, and usage errors.


def test_flows_from_a_json_file_give_the_same_reports(scenario: Scenario, tmp_path: Path) -> None:
    path = tmp_path / "flows.json"
    path.write_text(
        json.dumps(
            [
                {
                    "name": flow.name,
                    "description": flow.description,
                    "steps": [
                        {
                            "key": s.key,
                            "service": s.service,
                            "name": s.name,
                            "kind": s.kind,
                            "parent": list(s.parent),
                            "descendant_of": s.descendant_of,
                            "follows": s.follows,
                            "join_tag": s.join_tag,
                            "tags": dict(s.tags),
                            "optional": s.optional,
                        }
                        for s in flow.steps
                    ],
                }
                for flow in FLOWS
            ]
        )
    )

    assert load_flows(str(path)) == list(FLOWS)
    status, output = verify("--spans", str(scenario.span_file), "--flows", str(path), "--json")
    assert status == 0
    assert [r["spans"] for r in json.loads(output)] == [
        intact_reports(scenario.spans)[flow.name].spans for flow in FLOWS
    ]


def test_flows_come_from_the_environment_when_not_given(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TODO_OBS_TRACE_FLOWS", FLOWS_SPEC)

    assert verify("--spans", str(scenario.span_file))[0] == 0


def test_without_flows_the_command_says_how_to_give_them(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TODO_OBS_TRACE_FLOWS", raising=False)

    assert verify("--spans", str(scenario.span_file))[0] == 2
    assert "--flows reference_app.ops.flows:FLOWS" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flows", "reference_app.ops.flows"], "module:attribute"),
        (["--flows", "reference_app.ops.flows:NOPE"], "has no attribute 'NOPE'"),
        (["--flows", "no_such_module_here:FLOWS"], "cannot import 'no_such_module_here'"),
        (["--flows", FLOWS_SPEC, "--slow", "fast"], "--slow must be a positive duration"),
        (["--flows", FLOWS_SPEC, "--limit", "0"], "--limit must be a positive"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    scenario: Scenario, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert verify("--spans", str(scenario.span_file), *args)[0] == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_span_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify("--spans", str(tmp_path / "none.jsonl"), "--flows", FLOWS_SPEC)[0] == 2
    assert "cannot read span file" in capsys.readouterr().err


def test_an_unreachable_zipkin_is_reported(tmp_path: Path) -> None:
    from tests.helpers import free_port

    status, output = verify(
        "--zipkin", f"http://127.0.0.1:{free_port()}", "--flows", FLOWS_SPEC, "--timeout", "2"
    )

    assert status == 1
    assert "cannot query Zipkin at" in output


def test_the_collector_url_is_accepted_as_the_zipkin_address(scenario: Scenario) -> None:
    status, _ = verify("--zipkin", f"{scenario.zipkin_url}/api/v2/spans", "--flows", FLOWS_SPEC)

    assert status == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Step("a", "svc", "x", "SEND"), "kind must be one of"),
        (lambda: Step("a", "svc", "x", follows="b"), "`follows` and `join_tag` go together"),
        (lambda: Step("a", "svc", "x", parent=("b",), descendant_of="c"), "not several"),
        (lambda: Flow("f", "", ()), "has no steps"),
        (
            lambda: Flow("f", "", (Step("a", "s", "x"), Step("b", "s", "y", parent=("c",)))),
            "refers to 'c', which is not a step listed before it",
        ),
        (
            lambda: Flow("f", "", (Step("a", "s", "x", optional=True),)),
            "the first step 'a' is the trace's root",
        ),
    ],
)
def test_invalid_flows_are_refused_with_the_reason(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        build()


def test_the_docs_table_lists_every_step_of_the_flows() -> None:
    page = (ROOT / "docs" / "operations" / "traces.md").read_text(encoding="utf-8")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in page.splitlines()
        if line.startswith(("| next occurrence |", "| reminder |"))
    ]
    documented = [(row[1].removesuffix(" (optional)"), row[2], row[4]) for row in rows]
    names = [row[3].split("`")[1] for row in rows]

    expected = [(step.key, step.service, step.kind) for flow in FLOWS for step in flow.steps]
    assert documented == expected
    assert names == [step.name for flow in FLOWS for step in flow.steps]
    optional = [row[1].endswith("(optional)") for row in rows]
    assert optional == [step.optional for flow in FLOWS for step in flow.steps]

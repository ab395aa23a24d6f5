"""`instrumented_dapr_client`: a worker's Dapr calls carry its trace, request id and user id.

The Dapr SDK's `DaprClient` saves state and publishes over gRPC, which its
`headers_callback` never reaches, and invokes services over HTTP. The client
built here sends `traceparent`, `tracestate`, `baggage` and `x-request-id` on
both, and names the producer's span in the published CloudEvent. Run it next to
a sidecar: `dapr run --app-id worker -- python -m examples.dapr_grpc_client`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from todo_observability import configure, get_logger, set_user_id, traced
from todo_observability.dapr.grpc import instrumented_dapr_client

if TYPE_CHECKING:
    from dapr.clients import DaprClient

log = get_logger(__name__)


@traced("tasks.announce")
def announce_task(dapr: DaprClient, task: dict[str, Any]) -> None:
    set_user_id(task["owner"])  # a worker has no request; this starts its unit of work
    body = json.dumps(task)
    dapr.save_state("statestore", f"task-{task['id']}", body)  # gRPC
    dapr.publish_event("pubsub", "task-created", body, data_content_type="application/json")  # gRPC
    dapr.invoke_method(  # HTTP
        "notify", "tasks/created", body, content_type="application/json", http_verb="POST"
    )
    log.info("task announced", extra={"task_id": task["id"]})


def main(**overrides: Any) -> None:
    """Announce one task through the sidecar (`DAPR_GRPC_PORT`/`DAPR_HTTP_PORT`, or the `*_ENDPOINT` variables)."""
    obs = configure(service_name="dapr-worker", **overrides)
    try:
        # client_spans: one CLIENT span per gRPC call, the parent the sidecar sees.
        with instrumented_dapr_client(
            client_spans=True, tracer_provider=obs.tracer_provider
        ) as dapr:
            announce_task(dapr, {"id": 1, "title": "Write the docs", "owner": "alice"})
    finally:
        obs.shutdown()


if __name__ == "__main__":
    main()

"""daprd's error answers: `{"errorCode": ..., "message": ...}`, with `details` for the newer errors.

Codes, statuses and messages follow daprd (`pkg/messages`, `pkg/api/errors`): the errors built
with dapr's kit carry `details` (an `ErrorInfo` with the reason, sometimes a `ResourceInfo`), and
when they have no legacy code the reason is the `errorCode` (the Jobs API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from todo_observability.testing.sidecar._json import Struct, dumps

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DaprApiError"]

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RESOURCE_INFO = "type.googleapis.com/google.rpc.ResourceInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


class DaprApiError(Exception):
    """An error daprd answers with: HTTP status, error code, message and optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str | None = None,
        reason_metadata: Mapping[str, str] | None = None,
        resource: tuple[str, str] | None = None,
        field_violation: tuple[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code or (reason or "")
        self.message = message
        self.details: list[dict[str, Any]] = []
        if reason is not None:
            self.details.append(
                {
                    "@type": _ERROR_INFO,
                    "reason": reason,
                    "domain": "dapr.io",
                    "metadata": dict(reason_metadata) if reason_metadata else None,
                }
            )
        if resource is not None:
            self.details.append(
                {
                    "@type": _RESOURCE_INFO,
                    "resource_type": resource[0],
                    "resource_name": resource[1],
                    "owner": "",
                    "description": "",
                }
            )
        if field_violation is not None:
            self.details.append(
                {
                    "@type": _BAD_REQUEST,
                    "field_violations": [
                        {"field": field_violation[0], "description": field_violation[1]}
                    ],
                }
            )

    def body(self) -> dict[str, Any]:
        """The JSON body daprd writes."""
        body = Struct(errorCode=self.code, message=self.message)
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> Response:
        """The error as a Starlette response."""
        return Response(dumps(self.body()), status_code=self.status, media_type="application/json")

    # --- pub/sub ----------------------------------------------------------------------------

    @classmethod
    def pubsub_not_found(cls, name: str) -> DaprApiError:
        """Publishing to a pub/sub component the sidecar does not have."""
        return cls(
            404,
            "ERR_PUBSUB_NOT_FOUND",
            f"pubsub {name} not found",
            reason="DAPR_PUBSUB_NOT_FOUND",
            resource=("pubsub", name),
        )

    @classmethod
    def topic_empty(cls, name: str) -> DaprApiError:
        """Publishing without a topic."""
        return cls(
            404,
            "ERR_TOPIC_NAME_EMPTY",
            f"topic is empty in pubsub {name}",
            reason="DAPR_PUBSUB_TOPIC_NAME_EMPTY",
            resource=("pubsub", name),
        )

    @classmethod
    def pubsub_metadata(cls, name: str, error: str) -> DaprApiError:
        """Publish metadata daprd cannot read (`metadata.rawPayload=maybe`)."""
        return cls(
            400,
            "ERR_PUBSUB_REQUEST_METADATA",
            f"failed deserializing metadata: {error}",
            reason="DAPR_PUBSUB_METADATA_DESERIALIZATION",
            resource=("pubsub", name),
        )

    @classmethod
    def cloud_event_creation(cls, name: str) -> DaprApiError:
        """An `application/cloudevents+json` body that is not a JSON object."""
        return cls(
            500,
            "ERR_PUBSUB_CLOUD_EVENTS_SER",
            "cannot create cloudevent",
            reason="DAPR_PUBSUB_CLOUD_EVENT_CREATION",
            resource=("pubsub", name),
        )

    @classmethod
    def publish_message(cls, name: str, topic: str, error: str) -> DaprApiError:
        """The pub/sub component failed to publish."""
        return cls(
            500,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            f"error when publishing to topic {topic} in pubsub {name}: {error}",
            reason="DAPR_PUBSUB_PUBLISH_MESSAGE",
            resource=("pubsub", name),
        )

    @classmethod
    def bulk_unmarshal(cls, name: str, topic: str, error: str) -> DaprApiError:
        """A bulk publish body that is not a list of entries."""
        return cls(
            400,
            "ERR_PUBSUB_EVENTS_SER",
            f"error when unmarshaling the request for topic {topic} pubsub {name}: {error}",
            reason="DAPR_PUBSUB_UNMARSHAL_EVENTS",
            resource=("pubsub", name),
        )

    @classmethod
    def bulk_marshal_events(cls, name: str, topic: str, error: str) -> DaprApiError:
        """A bulk publish entry without a unique `entryId`."""
        return cls(
            400,
            "ERR_PUBSUB_EVENTS_SER",
            f"error marshaling events to bytes for topic {topic} pubsub {name}. error: {error}",
            reason="DAPR_PUBSUB_MARSHAL_EVENTS",
            resource=("pubsub", name),
        )

    @classmethod
    def bulk_marshal_envelope(cls, name: str, topic: str, error: str) -> DaprApiError:
        """A bulk publish entry whose event does not fit its content type."""
        return cls(
            500,
            "ERR_PUBSUB_CLOUD_EVENTS_SER",
            f"error when marshalling cloud event envelope for topic {topic} pubsub {name}: {error}",
            reason="DAPR_PUBSUB_MARSHAL_ENVELOPE",
            resource=("pubsub", name),
        )

    # --- state --------------------------------------------------------------------------------

    @classmethod
    def state_store_not_found(cls, name: str) -> DaprApiError:
        """A state store the sidecar does not have."""
        return cls(
            400,
            "ERR_STATE_STORE_NOT_FOUND",
            f"state store {name} is not found",
            reason="DAPR_STATE_NOT_FOUND",
        )

    @classmethod
    def state_illegal_key(cls, store: str, key: str) -> DaprApiError:
        """A key with `||`, which daprd reserves as its key prefix separator."""
        message = f"input key/keyPrefix '{key}' can't contain '||'"
        return cls(
            400,
            "ERR_MALFORMED_REQUEST",
            message,
            reason="DAPR_STATE_ILLEGAL_KEY",
            resource=("state", store),
            field_violation=(key, message),
        )

    # --- generic --------------------------------------------------------------------------------

    @classmethod
    def malformed_request(cls, error: str) -> DaprApiError:
        """A body daprd cannot decode."""
        return cls(400, "ERR_MALFORMED_REQUEST", f"failed deserializing HTTP body: {error}")

    @classmethod
    def bad_request(cls, error: str) -> DaprApiError:
        """A request that protobuf JSON refuses (the Jobs API)."""
        return cls(400, "ERR_BAD_REQUEST", f"invalid request: {error}")

    # --- service invocation -------------------------------------------------------------------

    @classmethod
    def direct_invoke(cls, app_id: str, error: str) -> DaprApiError:
        """Invoking an app id that cannot be reached."""
        return cls(500, "ERR_DIRECT_INVOKE", f"failed to invoke, id: {app_id}, err: {error}")

    @classmethod
    def direct_invoke_no_app_id(cls) -> DaprApiError:
        """An invocation with no app id in the path nor in `dapr-app-id`."""
        return cls(
            404,
            "ERR_DIRECT_INVOKE",
            "failed getting app id either from the URL path or the header dapr-app-id",
        )

    # --- health -------------------------------------------------------------------------------

    @classmethod
    def health_not_ready(cls, targets: list[str]) -> DaprApiError:
        """`/v1.0/healthz` before the sidecar is ready."""
        return cls(500, "ERR_HEALTH_NOT_READY", f"dapr is not ready: [{' '.join(targets)}]")

    @classmethod
    def health_app_id_mismatch(cls) -> DaprApiError:
        """`/v1.0/healthz?appid=` with another app's id."""
        return cls(500, "ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match")

    # --- jobs (the scheduler's errors have no legacy code: the reason is the errorCode) --------

    @classmethod
    def scheduler(cls, status: int, reason: str, message: str, app_id: str) -> DaprApiError:
        """A Jobs API error, `errorCode` = reason (`DAPR_SCHEDULER_...`)."""
        return cls(
            status,
            "",
            message,
            reason=reason,
            reason_metadata={"appID": app_id, "namespace": ""},
        )

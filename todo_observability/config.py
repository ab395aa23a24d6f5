"""Settings: every option declared once, with its environment variable, default and validation.

`resolve_settings()` turns the keyword arguments of `configure()` into a frozen
`Settings`. Each option takes, in order: the explicit argument, its environment
variable, a documented default; the identity of the service (`IDENTITY`) takes its
environment variable first, then the argument as the default. An invalid value raises `ConfigurationError`
naming the argument or variable, the value, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from todo_observability.exceptions import ConfigurationError

__all__ = ["IDENTITY", "OPTIONS", "Option", "Settings", "explain_settings", "resolve_settings"]

T = TypeVar("T")

_PRODUCTION_ENVIRONMENTS = frozenset({"prod", "production"})
"""Values of `environment` (in any case) that mean production: one trace in ten, closed details."""
TRACE_EXPORTERS = frozenset({"zipkin", "otlp", "console", "file", "memory", "none"})
PROBES = ("live", "ready", "startup")


def _probe_paths(health_path: str | None) -> dict[str, str]:
    """The path of each probe under `health_path`: `{"/health/live": "live", ...}`; none when unset."""
    if not health_path:
        return {}
    prefix = health_path.rstrip("/")
    return {f"{prefix}/{probe}": probe for probe in PROBES}


_DEVELOPMENT_ENVIRONMENTS = frozenset({"dev", "development", "local", "test"})
"""Values of `environment` (in any case) that mean development: the only ones where what needs a
token elsewhere (the dead-letter API) answers without one."""


def _is_production(environment: str) -> bool:
    return environment.lower() in _PRODUCTION_ENVIRONMENTS


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class _Invalid(ValueError):
    """Raised by a parser: `what` completes "must be ...", `fix` says how to mend it."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what = what
        self.fix = fix


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting: its `configure()` argument, environment variable, default and parser.

    `parse` accepts either the raw environment string or the Python value given
    to `configure()`, and returns the normalised value; an invalid value becomes
    a `ConfigurationError` naming the option.
    """

    field: str
    env: str
    default: str
    parse: Callable[[Any], T]
    help: str


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value.strip()


def _optional_text(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _text(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    raise _Invalid("a boolean", "Use one of true, false, 1, 0, yes, no, on, off.")


SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
"""The values of `OTEL_TRACES_SAMPLER` the SDK builds (the specification's, but the remote ones)."""


def _sampler(value: Any) -> str:
    name = _text(value).lower()
    if name not in SAMPLERS:
        raise _Invalid(
            f"one of {', '.join(sorted(SAMPLERS))}",
            "jaeger_remote and xray need their own samplers: pass tracer_provider= built with one.",
        )
    return name


def _ratio(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise _Invalid(
            "a number between 0 and 1", "For example 0.1 keeps one trace in ten."
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise _Invalid("a number between 0 and 1", "For example 0.1 keeps one trace in ten.")
    return ratio


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _Invalid("a whole number greater than 0") from None
    if number <= 0 or isinstance(value, bool):
        raise _Invalid("a whole number greater than 0")
    return number


def _log_level(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = logging.getLevelName(value)
    if isinstance(value, str):
        name = value.strip().upper()
        if name in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            return name
    raise _Invalid("a log level", "Use one of DEBUG, INFO, WARNING, ERROR, CRITICAL.")


def _url(value: Any) -> str:
    text = _text(value)
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise _Invalid("an http:// or https:// URL", "For example http://zipkin:9411/api/v2/spans.")
    return text


def _optional_url(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _url(value)


OTLP_PROTOCOLS = ("http/protobuf", "grpc")


def _otlp_protocol(value: Any) -> str:
    protocol = _text(value).lower()
    if protocol not in OTLP_PROTOCOLS:
        raise _Invalid(
            "http/protobuf or grpc",
            "http/json has no Python exporter; use http/protobuf.",
        )
    return protocol


def _optional_otlp_protocol(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _otlp_protocol(value)


def _path(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = _text(value)
    if not text.startswith("/"):
        raise _Invalid("a URL path starting with '/'", f"For example '/{text}'.")
    return text


def _items(value: Any) -> tuple[str, ...]:
    """A comma-separated string, or a sequence of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    elif isinstance(value, Iterable) and not isinstance(value, Mapping):
        parts = list(value)
        if not all(isinstance(part, str) for part in parts):
            raise _Invalid("a comma-separated string or a list of strings")
        parts = [part.strip() for part in parts]
    else:
        raise _Invalid("a comma-separated string or a list of strings")
    return tuple(part for part in parts if part)


def _paths(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    paths = _items(value)
    for path in paths:
        if not path.startswith("/"):
            raise _Invalid("a list of URL paths, each starting with '/'", f"Fix {path!r}.")
    return paths


def _exporters(value: Any) -> tuple[str, ...]:
    names = tuple(name.lower() for name in _items(value))
    unknown = [name for name in names if name not in TRACE_EXPORTERS]
    if unknown or not names:
        raise _Invalid(
            "a comma-separated list of " + ", ".join(sorted(TRACE_EXPORTERS)),
            f"{', '.join(map(repr, unknown)) or 'An empty list'} is not one of them.",
        )
    if "none" in names and len(names) > 1:
        raise _Invalid("'none' alone, or a list of exporters without 'none'")
    return () if names == ("none",) else names


def _header_name(value: Any) -> str:
    text = _text(value)
    if not _HEADER_NAME.match(text):
        raise _Invalid("an HTTP header name (letters, digits and -)", "For example X-Request-ID.")
    return text.lower()


def _optional_header_name(value: Any) -> str | None:
    text = _optional_text(value)
    if text is not None and not _HEADER_NAME.match(text):
        raise _Invalid("an HTTP header name (letters, digits and -)", "For example X-User-ID.")
    return text.lower() if text else None


def _header_names(value: Any) -> tuple[str, ...]:
    names = _items(value)
    for name in names:
        if not _HEADER_NAME.match(name):
            raise _Invalid("a list of HTTP header names", f"{name!r} is not a header name.")
    return tuple(name.lower() for name in names)


_HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$|^\[[0-9a-f:.]+\]$")


def _host_patterns(value: Any) -> tuple[str, ...]:
    hosts = tuple(host.lower() for host in _items(value))
    for host in hosts:
        if not _HOST_PATTERN.match(host):
            raise _Invalid(
                "a list of host names or *.suffix patterns",
                f"{host!r} is neither; for example backend,*.todo.svc.cluster.local.",
            )
    return hosts


def _patterns(value: Any) -> tuple[str, ...]:
    patterns = _items(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:  # noqa: PERF203 - runs once, at configuration time
            raise _Invalid("a list of regular expressions", f"{pattern!r}: {exc}.") from None
    return patterns


def _optional_seconds(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise _Invalid("a number of seconds greater than 0", "For example 5.") from None
    if seconds <= 0 or isinstance(value, bool):
        raise _Invalid("a number of seconds greater than 0", "For example 5.")
    return seconds


def _refresh(value: Any) -> float | str | None:
    if isinstance(value, str) and value.strip().lower() in {"ttl", "off"}:
        return value.strip().lower()
    try:
        return _optional_seconds(value)
    except _Invalid:
        raise _Invalid(
            "a number of seconds greater than 0",
            "Or 'ttl' (each check again as its result expires), or 'off' (checks run when probed or scraped).",
        ) from None


def _details_policy(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in {"full", "authenticated"}:
        return value.strip().lower()
    raise _Invalid(
        "'full' or 'authenticated'", "'authenticated' hides errors from callers without the token."
    )


def _resource_attributes(value: Any) -> dict[str, str]:
    """`key=value,key2=value2` as OTEL_RESOURCE_ATTRIBUTES specifies (values percent-encoded)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise _Invalid("a mapping of strings to strings")
        return dict(value)
    attributes: dict[str, str] = {}
    for pair in _items(value):
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise _Invalid(
                "a comma-separated list of key=value pairs",
                f"{pair!r} has no '='; for example service.namespace=todo,team=core.",
            )
        attributes[key.strip()] = urllib.parse.unquote(raw.strip())
    return attributes


OPTIONS: tuple[Option[Any], ...] = (
    Option(
        "service_name",
        "OTEL_SERVICE_NAME",
        "service.name of OTEL_RESOURCE_ATTRIBUTES, else 'unknown_service'",
        _optional_text,
        "Name of the service, on every log line, span and target_info.",
    ),
    Option(
        "service_version",
        "TODO_OBS_SERVICE_VERSION",
        "service.version of OTEL_RESOURCE_ATTRIBUTES, else '0.0.0'",
        _optional_text,
        "Version of the service (service.version).",
    ),
    Option(
        "environment",
        "TODO_OBS_ENVIRONMENT",
        "deployment.environment.name (or deployment.environment) of OTEL_RESOURCE_ATTRIBUTES, else 'dev'",
        _optional_text,
        "Deployment environment; chooses the default sampling ratio.",
    ),
    Option(
        "resource_attributes",
        "OTEL_RESOURCE_ATTRIBUTES",
        "none",
        _resource_attributes,
        "Extra resource attributes, key=value pairs.",
    ),
    Option("log_level", "TODO_OBS_LOG_LEVEL", "INFO", _log_level, "Level of the root logger."),
    Option("access_log", "TODO_OBS_ACCESS_LOG", "true", _bool, "One JSON line per request."),
    Option(
        "redact_keys",
        "TODO_OBS_REDACT_KEYS",
        "none",
        _patterns,
        "Extra regular expressions; values under matching keys are redacted.",
    ),
    Option(
        "traces_sampler",
        "OTEL_TRACES_SAMPLER",
        "parentbased_traceidratio",
        _sampler,
        "always_on, always_off, traceidratio, or parentbased_ of each (the ratio is sample_ratio).",
    ),
    Option(
        "sample_ratio",
        "OTEL_TRACES_SAMPLER_ARG",
        "1.0 in dev/development/local/test, 0.1 in prod/production, else 1.0",
        _ratio,
        "Share of new traces kept, between 0 and 1 (parent-based).",
    ),
    Option(
        "traces_exporter",
        "OTEL_TRACES_EXPORTER",
        "zipkin",
        _exporters,
        "Comma-separated: zipkin, otlp, console, file, memory, or none.",
    ),
    Option(
        "zipkin_endpoint",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
        "http://localhost:9411/api/v2/spans",
        _url,
        "Zipkin v2 JSON spans endpoint.",
    ),
    Option(
        "otlp_endpoint",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://localhost:4318 (http/protobuf), http://localhost:4317 (grpc)",
        _optional_url,
        "OTLP base URL; over HTTP spans go to /v1/traces under it.",
    ),
    Option(
        "otlp_traces_endpoint",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "none (otlp_endpoint)",
        _optional_url,
        "OTLP traces URL, used as it is; wins over otlp_endpoint.",
    ),
    Option(
        "otlp_protocol",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf",
        _otlp_protocol,
        "http/protobuf (extra otlp) or grpc (extra otlp-grpc).",
    ),
    Option(
        "otlp_traces_protocol",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "none (otlp_protocol)",
        _optional_otlp_protocol,
        "The protocol of traces; wins over otlp_protocol.",
    ),
    Option(
        "traces_file",
        "TODO_OBS_TRACES_FILE",
        "none",
        _optional_text,
        "File the file exporter appends Zipkin v2 JSON to, one span array per line.",
    ),
    Option(
        "metrics_path",
        "TODO_OBS_METRICS_PATH",
        "/metrics",
        _path,
        "Path serving Prometheus metrics; empty to serve none.",
    ),
    Option(
        "health_path",
        "TODO_OBS_HEALTH_PATH",
        "/health",
        _path,
        "Prefix of the probes <prefix>/live, /ready and /startup; empty to serve none.",
    ),
    Option(
        "health_details",
        "TODO_OBS_HEALTH_DETAILS",
        "'authenticated' in prod/production, else 'full'",
        _details_policy,
        "Who sees check errors and details in probe bodies: full (everyone) or authenticated.",
    ),
    Option(
        "health_refresh",
        "TODO_OBS_HEALTH_REFRESH",
        "ttl (each check again as its result expires)",
        _refresh,
        "Background runs of the checks: 'ttl', a number of seconds between runs, or 'off'.",
    ),
    Option(
        "health_token",
        "TODO_OBS_HEALTH_TOKEN",
        "none",
        _optional_text,
        "Bearer token that shows errors and details under the authenticated policy.",
    ),
    Option(
        "excluded_paths",
        "TODO_OBS_EXCLUDED_PATHS",
        "the metrics path and the three probe paths",
        _paths,
        "Paths left out of RED metrics, traces and the access log (failures are still logged).",
    ),
    Option(
        "max_label_values",
        "TODO_OBS_MAX_LABEL_VALUES",
        "200",
        _positive_int,
        "Distinct values kept per metric label before the overflow value is used.",
    ),
    Option(
        "max_series_per_metric",
        "TODO_OBS_MAX_SERIES",
        "1000",
        _positive_int,
        "Label combinations kept per metric before every label takes the overflow value.",
    ),
    Option(
        "request_id_header",
        "TODO_OBS_REQUEST_ID_HEADER",
        "X-Request-ID",
        _header_name,
        "Header carrying the request id in and out.",
    ),
    Option(
        "user_id_header",
        "TODO_OBS_USER_ID_HEADER",
        "none (not trusted)",
        _optional_header_name,
        "A header trusted to carry the user id, such as X-User-ID; only set behind a trusted gateway.",
    ),
    Option(
        "trust_incoming_context",
        "TODO_OBS_TRUST_INCOMING_CONTEXT",
        "true",
        _bool,
        "Take user_id and request_id from incoming baggage (and the user-id header); false at a public edge.",
    ),
    Option(
        "internal_hosts",
        "TODO_OBS_INTERNAL_HOSTS",
        "none (the Dapr sidecar only)",
        _host_patterns,
        "Hosts (or *.suffix patterns) outgoing calls send user_id and request_id to; others get the trace context only.",
    ),
    Option(
        "capture_headers",
        "TODO_OBS_CAPTURE_HEADERS",
        "none",
        _header_names,
        "Request headers recorded as span attributes (sensitive ones are redacted).",
    ),
    Option(
        "sdk_disabled",
        "OTEL_SDK_DISABLED",
        "false",
        _bool,
        "OpenTelemetry's switch: true makes every tracer a no-op (no spans); logs and metrics stay.",
    ),
    Option(
        "load_plugins",
        "TODO_OBS_LOAD_PLUGINS",
        "true",
        _bool,
        "Load plugins from the todo_observability entry-point group.",
    ),
)

_OPTIONS_BY_FIELD = {option.field: option for option in OPTIONS}
_EMPTY_MEANS_OFF = frozenset({"metrics_path", "health_path"})


@dataclass(frozen=True)
class Settings:
    """The resolved configuration. Build it with `resolve_settings()`; it never changes afterwards."""

    service_name: str = "unknown_service"
    service_version: str = "0.0.0"
    environment: str = "dev"
    resource_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    log_level: str = "INFO"
    access_log: bool = True
    redact_keys: tuple[str, ...] = ()
    traces_sampler: str = "parentbased_traceidratio"
    sample_ratio: float = 1.0
    traces_exporter: tuple[str, ...] = ("zipkin",)
    zipkin_endpoint: str = "http://localhost:9411/api/v2/spans"
    otlp_endpoint: str | None = None
    otlp_traces_endpoint: str | None = None
    otlp_protocol: str = "http/protobuf"
    otlp_traces_protocol: str | None = None
    traces_file: str | None = None
    metrics_path: str | None = "/metrics"
    health_path: str | None = "/health"
    health_details: str = "full"
    health_refresh: float | Literal["ttl", "off"] = "ttl"
    health_token: str | None = None
    excluded_paths: tuple[str, ...] = (
        "/metrics",
        "/health/live",
        "/health/ready",
        "/health/startup",
    )
    max_label_values: int = 200
    max_series_per_metric: int = 1000
    request_id_header: str = "x-request-id"
    user_id_header: str | None = None
    trust_incoming_context: bool = True
    internal_hosts: tuple[str, ...] = ()
    capture_headers: tuple[str, ...] = ()
    sdk_disabled: bool = False
    load_plugins: bool = True

    @property
    def production(self) -> bool:
        """Whether `environment` names production (`prod` or `production`, in any case)."""
        return _is_production(self.environment)

    @property
    def development(self) -> bool:
        """Whether `environment` names development (`dev`, `development`, `local`, `test`, any case)."""
        return self.environment.lower() in _DEVELOPMENT_ENVIRONMENTS


def _invalid(option: Option[Any], source: str, raw: Any, exc: _Invalid) -> ConfigurationError:
    fix = f" {exc.fix}" if exc.fix else ""
    return ConfigurationError(
        f"{source} must be {exc.what}, got {raw!r}.{fix}",
        field=option.field,
        env_var=option.env if source == option.env else None,
        value=raw,
    )


def _from_argument(option: Option[T], given: Any) -> tuple[T, bool]:
    """The parsed argument and whether one was given (`None` means not given)."""
    if given is None:
        return None, False  # type: ignore[return-value]
    try:
        return option.parse(given), True
    except _Invalid as exc:
        raise _invalid(option, option.field, given, exc) from None


def _from_environment(option: Option[T], env: Mapping[str, str]) -> tuple[T, bool]:
    """The parsed variable and whether it is set."""
    # An empty variable counts as unset, as OpenTelemetry specifies; only the
    # paths give empty a meaning ("serve none").
    if not (
        env.get(option.env, "").strip() or (option.env in env and option.field in _EMPTY_MEANS_OFF)
    ):
        return None, False  # type: ignore[return-value]
    raw = env[option.env]
    try:
        return option.parse(raw), True
    except _Invalid as exc:
        raise _invalid(option, option.env, raw, exc) from None


def default_sample_ratio(environment: str) -> float:
    """The sampling ratio an environment gets when none is configured."""
    return 0.1 if _is_production(environment) else 1.0


IDENTITY = ("service_name", "service_version", "environment", "resource_attributes")
"""The settings that say what the service is, where it runs: the deployment wins over the code.

For these the environment overrides a `configure()` argument, which acts as their default, so one
image runs as `backend` in one deployment and `backend-canary` in another. Every other setting is
how the code wants the SDK to behave: there the argument wins over the environment.
"""

_RESOURCE_KEYS = {
    "service_name": ("service.name",),
    "service_version": ("service.version",),
    "environment": ("deployment.environment.name", "deployment.environment"),
}
"""Where each identity setting sits in `OTEL_RESOURCE_ATTRIBUTES` (first key found wins)."""

ENVIRONMENT_ONLY = frozenset({"sdk_disabled"})
"""Options `configure()` takes no argument for: OpenTelemetry's own switch is the environment's."""

ARGUMENT = "argument"
DEFAULT = "default"


def _from_resource(field: str, resource: Mapping[str, str]) -> str | None:
    for key in _RESOURCE_KEYS[field]:
        if resource.get(key):
            return resource[key]
    return None


def explain_settings(
    env: Mapping[str, str] | None = None, **given: Any
) -> tuple[Settings, dict[str, str]]:
    """Resolve settings as `resolve_settings()` does, and say where each value came from.

    Args:
        env: The environment to read (defaults to `os.environ`).
        **given: Values given to `configure()`; `None` means "not given".

    Returns:
        The settings, and for each option's field its source: `"argument"`, the environment
        variable as `"$NAME"`, or `"default"` (also for a default derived from another setting).
        `resource_attributes` given both ways is `"argument+$OTEL_RESOURCE_ATTRIBUTES"`.

    Raises:
        ConfigurationError: a value is invalid, or an argument is unknown.
    """
    env = os.environ if env is None else env
    unknown = sorted(set(given) - set(_OPTIONS_BY_FIELD))
    if unknown:
        raise ConfigurationError(
            f"unknown setting {unknown[0]!r}. Known settings: {', '.join(sorted(_OPTIONS_BY_FIELD))}.",
            field=unknown[0],
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        if option.field in IDENTITY:
            continue
        value, was_set = _from_argument(option, given.get(option.field))
        source = ARGUMENT
        if not was_set:
            value, was_set = _from_environment(option, env)
            source = f"${option.env}"
        if was_set:
            values[option.field] = value
            sources[option.field] = source

    # The deployment's identity: each layer is asked in turn, the first with a value wins.
    # OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES, as the OTel spec says.
    resource_option = _OPTIONS_BY_FIELD["resource_attributes"]
    env_resource, env_has_resource = _from_environment(resource_option, env)
    code_resource, code_has_resource = _from_argument(
        resource_option, given.get("resource_attributes")
    )
    if env_has_resource or code_has_resource:
        # Key by key, the environment's pairs win over the code's.
        values["resource_attributes"] = {**(code_resource or {}), **(env_resource or {})}
        sources["resource_attributes"] = "+".join(
            name
            for name, present in (
                (ARGUMENT, code_has_resource),
                ("$OTEL_RESOURCE_ATTRIBUTES", env_has_resource),
            )
            if present
        )
    for field in ("service_name", "service_version", "environment"):
        option = _OPTIONS_BY_FIELD[field]
        from_env, _ = _from_environment(option, env)
        from_code, _ = _from_argument(option, given.get(field))
        for value, source in (
            (from_env, f"${option.env}"),
            (_from_resource(field, env_resource or {}), "$OTEL_RESOURCE_ATTRIBUTES"),
            (from_code, ARGUMENT),
            (_from_resource(field, code_resource or {}), ARGUMENT),
        ):
            if value is not None:
                values[field], sources[field] = value, source
                break

    explicit = set(values)
    # An option given as empty (None after parsing) falls back to its default, except
    # metrics_path, where empty means "serve no metrics".
    values = {
        k: v for k, v in values.items() if v is not None or k in ("metrics_path", "health_path")
    }
    if values.get("sample_ratio") is None:
        values["sample_ratio"] = default_sample_ratio(
            values.get("environment", Settings.environment)
        )
    metrics_path = values["metrics_path"] if "metrics_path" in explicit else Settings.metrics_path
    health_path = values["health_path"] if "health_path" in explicit else Settings.health_path
    if "excluded_paths" not in values:
        values["excluded_paths"] = tuple(p for p in (metrics_path, *_probe_paths(health_path)) if p)
    if "health_details" not in values:
        environment = values.get("environment", Settings.environment)
        values["health_details"] = "authenticated" if _is_production(environment) else "full"
    settings = Settings(**values)
    if "file" in settings.traces_exporter and not settings.traces_file:
        raise ConfigurationError(
            "the 'file' trace exporter needs a file: set traces_file= or TODO_OBS_TRACES_FILE "
            "(for example TODO_OBS_TRACES_FILE=spans.jsonl).",
            field="traces_file",
            env_var="TODO_OBS_TRACES_FILE",
        )
    everything = {option.field: sources.get(option.field, DEFAULT) for option in OPTIONS}
    return settings, everything


def resolve_settings(env: Mapping[str, str] | None = None, **given: Any) -> Settings:
    """Resolve settings from keyword arguments, the environment and defaults.

    Each setting takes the argument, else its environment variable, else its default; the
    identity settings (`IDENTITY`: service name, version, environment, resource attributes)
    take the environment first and the argument as their default.

    Args:
        env: The environment to read (defaults to `os.environ`).
        **given: Values given to `configure()`; `None` means "not given".

    Raises:
        ConfigurationError: a value is invalid, or an argument is unknown.
    """
    return explain_settings(env, **given)[0]

from __future__ import annotations

import pytest

from todo_observability.config import (
    IDENTITY,
    OPTIONS,
    Settings,
    explain_settings,
    resolve_settings,
)
from todo_observability.exceptions import ConfigurationError


def test_defaults_without_environment() -> None:
    settings = resolve_settings(env={})
    assert settings == Settings()
    assert settings.sample_ratio == 1.0
    assert settings.excluded_paths == (
        "/metrics",
        "/health/live",
        "/health/ready",
        "/health/startup",
    )


def test_argument_wins_over_environment_for_behaviour_settings() -> None:
    settings = resolve_settings(
        env={"TODO_OBS_LOG_LEVEL": "debug", "OTEL_TRACES_EXPORTER": "zipkin"},
        log_level="warning",
        traces_exporter="memory",
    )
    assert (settings.log_level, settings.traces_exporter) == ("WARNING", ("memory",))


def test_environment_renames_a_service_whose_code_names_it() -> None:
    settings, sources = explain_settings(
        env={"OTEL_SERVICE_NAME": "backend-canary"}, service_name="backend"
    )
    assert settings.service_name == "backend-canary"
    assert sources["service_name"] == "$OTEL_SERVICE_NAME"


def test_service_name_in_resource_attributes_also_wins_over_the_argument() -> None:
    settings, sources = explain_settings(
        env={"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource"}, service_name="backend"
    )
    assert settings.service_name == "from-resource"
    assert sources["service_name"] == "$OTEL_RESOURCE_ATTRIBUTES"


def test_otel_service_name_wins_over_resource_attributes_and_the_argument() -> None:
    settings = resolve_settings(
        env={"OTEL_SERVICE_NAME": "env", "OTEL_RESOURCE_ATTRIBUTES": "service.name=resource"},
        service_name="code",
        resource_attributes={"service.name": "code-resource"},
    )
    assert settings.service_name == "env"


def test_the_argument_is_the_default_of_the_identity_settings() -> None:
    settings, sources = explain_settings(
        env={"TODO_OBS_LOG_LEVEL": "debug"},
        service_name="backend",
        service_version="1.0.0",
        environment="prod",
    )
    assert (settings.service_name, settings.service_version, settings.environment) == (
        "backend",
        "1.0.0",
        "prod",
    )
    assert [sources[f] for f in ("service_name", "service_version", "environment")] == [
        "argument"
    ] * 3
    assert sources["log_level"] == "$TODO_OBS_LOG_LEVEL"
    assert sources["sample_ratio"] == "default"  # derived from the environment setting
    assert settings.sample_ratio == 0.1


def test_version_and_environment_of_the_deployment_win_over_the_argument() -> None:
    settings = resolve_settings(
        env={
            "TODO_OBS_SERVICE_VERSION": "2.0.0",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging",
        },
        service_version="1.0.0",
        environment="prod",
    )
    assert (settings.service_version, settings.environment) == ("2.0.0", "staging")
    assert settings.sample_ratio == 1.0  # staging's default, not prod's


def test_resource_attributes_of_the_environment_are_merged_over_the_arguments() -> None:
    settings, sources = explain_settings(
        env={"OTEL_RESOURCE_ATTRIBUTES": "team=ops,k8s.pod.name=backend-7"},
        resource_attributes={"team": "core", "service.namespace": "todo"},
    )
    assert settings.resource_attributes == {
        "team": "ops",
        "service.namespace": "todo",
        "k8s.pod.name": "backend-7",
    }
    assert sources["resource_attributes"] == "argument+$OTEL_RESOURCE_ATTRIBUTES"


def test_identity_and_other_settings_are_told_apart_by_one_list() -> None:
    assert IDENTITY == ("service_name", "service_version", "environment", "resource_attributes")
    assert set(IDENTITY) <= {option.field for option in OPTIONS}


def test_environment_wins_over_default() -> None:
    settings = resolve_settings(env={"OTEL_SERVICE_NAME": "backend", "TODO_OBS_LOG_LEVEL": "debug"})
    assert settings.service_name == "backend"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("environment", "ratio"),
    [
        ("dev", 1.0),
        ("development", 1.0),
        ("local", 1.0),
        ("prod", 0.1),
        ("production", 0.1),
        ("staging", 1.0),
    ],
)
def test_sample_ratio_follows_environment(environment: str, ratio: float) -> None:
    assert resolve_settings(env={}, environment=environment).sample_ratio == ratio


def test_explicit_sample_ratio_always_wins() -> None:
    settings = resolve_settings(env={"OTEL_TRACES_SAMPLER_ARG": "0.5"}, environment="prod")
    assert settings.sample_ratio == 0.5


def test_invalid_environment_value_names_variable_value_and_fix() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_settings(env={"OTEL_TRACES_SAMPLER_ARG": "1.5"})
    message = str(info.value)
    assert message.startswith(
        "OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, got '1.5'."
    )
    assert "0.1 keeps one trace in ten" in message
    assert info.value.env_var == "OTEL_TRACES_SAMPLER_ARG"
    assert info.value.field == "sample_ratio"
    assert isinstance(info.value, ValueError)


def test_invalid_argument_names_the_argument() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"^max_label_values must be a whole number greater than 0, got -3\.$",
    ):
        resolve_settings(env={}, max_label_values=-3)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"TODO_OBS_ACCESS_LOG": "maybe"}, "TODO_OBS_ACCESS_LOG must be a boolean, got 'maybe'"),
        ({"TODO_OBS_LOG_LEVEL": "LOUD"}, "Use one of DEBUG, INFO"),
        ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "zipkin:9411"}, "must be an http:// or https:// URL"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "'jaeger' is not one of them"),
        ({"OTEL_TRACES_EXPORTER": "none,zipkin"}, "'none' alone"),
        ({"TODO_OBS_METRICS_PATH": "metrics"}, "For example '/metrics'"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team"}, "'team' has no '='"),
        ({"TODO_OBS_REDACT_KEYS": "ssn,(unclosed"}, "a list of regular expressions"),
        ({"TODO_OBS_USER_ID_HEADER": "X User"}, "an HTTP header name"),
        ({"TODO_OBS_EXCLUDED_PATHS": "/ok,bad"}, "Fix 'bad'"),
    ],
)
def test_each_invalid_value_is_explained(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_settings(env=env)
    assert fragment in str(info.value)


def test_file_exporter_requires_a_file() -> None:
    with pytest.raises(ConfigurationError, match="TODO_OBS_TRACES_FILE"):
        resolve_settings(env={"OTEL_TRACES_EXPORTER": "file"})


def test_unknown_argument_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting 'servce_name'"):
        resolve_settings(env={}, servce_name="x")


def test_resource_attributes_supply_service_identity() -> None:
    settings = resolve_settings(
        env={
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=recurring,service.version=1.2.3,"
            "deployment.environment=production,team=todo%20core"
        }
    )
    assert settings.service_name == "recurring"
    assert settings.service_version == "1.2.3"
    assert settings.environment == "production"
    assert settings.sample_ratio == 0.1
    assert settings.resource_attributes["team"] == "todo core"


def test_otel_service_name_wins_over_resource_attributes() -> None:
    settings = resolve_settings(
        env={"OTEL_SERVICE_NAME": "backend", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"}
    )
    assert settings.service_name == "backend"


def test_empty_metrics_path_disables_metrics_and_its_exclusion() -> None:
    settings = resolve_settings(env={"TODO_OBS_METRICS_PATH": ""})
    assert settings.metrics_path is None
    assert "/metrics" not in settings.excluded_paths


def test_health_path_moves_the_probes_and_their_exclusion() -> None:
    settings = resolve_settings(env={"TODO_OBS_HEALTH_PATH": "/internal/health/"})
    assert settings.excluded_paths == (
        "/metrics",
        "/internal/health/live",
        "/internal/health/ready",
        "/internal/health/startup",
    )
    assert resolve_settings(env={"TODO_OBS_HEALTH_PATH": ""}).excluded_paths == ("/metrics",)


def test_health_details_are_hidden_by_default_only_in_production() -> None:
    assert resolve_settings(env={}).health_details == "full"
    assert resolve_settings(env={}, environment="production").health_details == "authenticated"
    assert (
        resolve_settings(env={}, environment="prod", health_details="FULL").health_details == "full"
    )
    with pytest.raises(
        ConfigurationError, match="health_details must be 'full' or 'authenticated', got 'some'"
    ):
        resolve_settings(env={}, health_details="some")


def test_custom_metrics_path_is_excluded() -> None:
    settings = resolve_settings(env={}, metrics_path="/internal/metrics")
    assert settings.excluded_paths[0] == "/internal/metrics"


def test_lists_accept_strings_and_sequences() -> None:
    a = resolve_settings(env={}, traces_exporter="zipkin, file", traces_file="x.jsonl")
    b = resolve_settings(env={}, traces_exporter=["zipkin", "file"], traces_file="x.jsonl")
    assert a.traces_exporter == b.traces_exporter == ("zipkin", "file")
    assert resolve_settings(env={}, traces_exporter="none").traces_exporter == ()


def test_header_names_are_lowercased() -> None:
    settings = resolve_settings(
        env={}, request_id_header="X-Correlation-ID", user_id_header="X-User-ID"
    )
    assert settings.request_id_header == "x-correlation-id"
    assert settings.user_id_header == "x-user-id"


def test_every_option_is_a_settings_field_with_a_unique_variable() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {option.field for option in OPTIONS} == fields
    env_vars = [option.env for option in OPTIONS]
    assert len(env_vars) == len(set(env_vars))


def test_empty_variables_count_as_unset() -> None:
    env = {
        option.env: "" for option in OPTIONS if option.field not in ("metrics_path", "health_path")
    }
    assert resolve_settings(env=env) == Settings()


def test_any_iterable_of_strings_is_accepted() -> None:
    settings = resolve_settings(
        env={}, redact_keys={"ssn"}, capture_headers=(h for h in ["X-Tenant"])
    )
    assert settings.redact_keys == ("ssn",)
    assert settings.capture_headers == ("x-tenant",)
    with pytest.raises(ConfigurationError, match="a comma-separated string or a list of strings"):
        resolve_settings(env={}, redact_keys=[1, 2])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"service_name": 42}, "service_name must be a non-empty string, got 42"),
        ({"access_log": "sometimes"}, "access_log must be a boolean"),
        ({"access_log": 2}, "access_log must be a boolean"),
        ({"sample_ratio": "half"}, "sample_ratio must be a number between 0 and 1, got 'half'"),
        ({"max_label_values": "many"}, "max_label_values must be a whole number greater than 0"),
        ({"max_label_values": True}, "max_label_values must be a whole number greater than 0"),
        ({"log_level": 5}, "log_level must be a log level, got 5"),
        ({"log_level": 3.5}, "log_level must be a log level"),
        ({"zipkin_endpoint": "ftp://zipkin/api"}, "must be an http:// or https:// URL"),
        ({"capture_headers": 12}, "a comma-separated string or a list of strings"),
        ({"capture_headers": ["ok", "bad header"]}, "'bad header' is not a header name"),
        ({"request_id_header": "X Request"}, "request_id_header must be an HTTP header name"),
        ({"resource_attributes": {"a": 1}}, "a mapping of strings to strings"),
        ({"traces_exporter": ""}, "An empty list is not one of them"),
        (
            {"health_refresh": "soon"},
            "health_refresh must be a number of seconds greater than 0, got 'soon'",
        ),
        ({"health_refresh": 0}, "health_refresh must be a number of seconds greater than 0"),
    ],
)
def test_invalid_arguments_are_explained(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_settings(env={}, **kwargs)
    assert fragment in str(info.value)
    assert info.value.env_var is None


def test_python_values_are_accepted_where_natural() -> None:
    settings = resolve_settings(
        env={},
        access_log=False,
        log_level=10,
        sample_ratio=0,
        resource_attributes={"team": "core"},
        max_label_values="50",
    )
    assert (settings.access_log, settings.log_level, settings.sample_ratio) == (False, "DEBUG", 0.0)
    assert settings.resource_attributes == {"team": "core"}
    assert settings.max_label_values == 50

"""The Kubernetes and Dapr manifests (`reference_app/deploy/k8s`), rendered and validated offline.

`kubectl kustomize` renders both overlays; built-in kinds are validated with kubernetes-validate
(strict schemas of Kubernetes 1.31), Dapr kinds against the `openAPIV3Schema` of Dapr's CRDs
(copied in `tests/reference_app/ops/schemas/dapr`, made strict the way the API server's field validation
is), and prometheus-operator kinds structurally: no schema of theirs is on disk. Then what the
manifests promise is checked against the real services: each one is built, its probes and
`/dapr/subscribe` are asked, and its settings are read from the environment its container gets.
"""

from __future__ import annotations

import copy
import datetime
import fnmatch
import functools
import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from reference_app import backend, frontend, notifications, recurring
from reference_app.common.auth import DEV_JWT_SECRET
from tests.helpers import free_port
from todo_observability.config import resolve_settings
from todo_observability.logs import JsonFormatter

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "reference_app" / "deploy" / "k8s"
FLUENT_BIT = K8S / "base" / "monitoring" / "fluent-bit"
DAPR_SCHEMAS = Path(__file__).parent / "schemas" / "dapr"
DEPLOY_DOC = ROOT / "docs" / "operations" / "deploy.md"

KUBERNETES_VERSION = "1.31"
NAMESPACE = "todo"
OVERLAYS = ("dev", "prod")
ENVIRONMENT = {"dev": "dev", "prod": "prod"}
SAMPLING_RATE = {"dev": "1", "prod": "0.1"}
PROBES = {
    # probe: (path suffix after the health prefix, periodSeconds, timeoutSeconds)
    "livenessProbe": ("/live", 10, 5),
    "readinessProbe": ("/ready", 5, 3),
    "startupProbe": ("/startup", 5, 3),
}
STARTUP_ALLOWANCE_SECONDS = 60
DAPR_METRICS_PORT = "9090"
SUBSCRIBE_PATH = "/dapr/subscribe"


@dataclass(frozen=True)
class Service:
    """One of the four services, as its code defines it."""

    app_id: str
    module: str
    settings: Any  # the service's Settings class

    @property
    def default_port(self) -> int:
        port: int = self.settings().port
        return port


SERVICES = {
    service.app_id: service
    for service in (
        Service("frontend", "reference_app.frontend", frontend.Settings),
        Service("backend", "reference_app.backend", backend.Settings),
        Service("recurring-task-service", "reference_app.recurring", recurring.Settings),
        Service("notification-service", "reference_app.notifications", notifications.Settings),
    )
}

# What the documented Secrets hold, for reading the settings as the containers would. The
# keys must be exactly the (Secret, key) pairs the manifests reference.
SECRET_VALUES = {
    ("todo-jwt", "jwt-secret"): "k8s-test-jwt-secret-0123456789abcdefghijklmnop",
    ("todo-database", "database-url"): "postgresql+psycopg://todo:password@postgres:5432/todo",
    ("todo-database", "dlq-database-url"): (
        "postgresql+psycopg://todo:password@postgres:5432/todo_dead_letters"
    ),
    ("todo-smtp", "username"): "reminders",
    ("todo-smtp", "password"): "smtp-password",
    ("todo-admin", "admin-token"): "admin-token-0123456789",
    ("todo-redis", "redis-password"): "redis-password",
    ("todo-kafka", "username"): "todo",
    ("todo-kafka", "password"): "kafka-password",
    ("todo-kafka", "ca.crt"): "-----BEGIN CERTIFICATE-----",
    # The Alertmanager's receivers: files the `*_file` fields of its configuration name.
    ("alertmanager-receivers", "slack-warnings-webhook-url"): "https://hooks.example/warnings",
    ("alertmanager-receivers", "slack-slo-webhook-url"): "https://hooks.example/slo",
    ("alertmanager-receivers", "slack-kafka-webhook-url"): "https://hooks.example/kafka",
    ("alertmanager-receivers", "pagerduty-routing-key"): "routing-key-0123456789",
    ("alertmanager-receivers", "smtp-password"): "smtp-relay-password",
}

Resource = dict[str, Any]


# --- rendering ----------------------------------------------------------------------------------


@functools.cache
def _rendered(overlay: str) -> tuple[Resource, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: install kubectl (kustomize is built into it), then "
            "rerun `pytest tests/reference_app/ops`."
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[Resource]:
    """The resources of `overlay`, as `kubectl kustomize` renders them (a fresh copy)."""
    return copy.deepcopy(list(_rendered(overlay)))


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [resource for resource in resources if resource["kind"] == kind]


def named(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def config_map(resources: list[Resource], generated_name: str) -> Resource:
    """The ConfigMap generated as `generated_name` (kustomize appends a hash of its content)."""
    matches = [
        r
        for r in of_kind(resources, "ConfigMap")
        if re.fullmatch(rf"{re.escape(generated_name)}-[a-z0-9]{{10}}", r["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one generated ConfigMap {generated_name!r}"
    return matches[0]


def container(deployment: Resource) -> Resource:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the Dapr sidecar is injected: one container is declared"
    found: Resource = containers[0]
    return found


def container_env(resources: list[Resource], deployment: Resource) -> dict[str, str]:
    """The environment the container starts with, with the documented Secrets in place."""
    spec = container(deployment)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(named(resources, "ConfigMap", ref)["data"])
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        ref = variable["valueFrom"]
        if "secretKeyRef" in ref:
            key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            env[variable["name"]] = SECRET_VALUES[key]
        else:
            cm = named(resources, "ConfigMap", ref["configMapKeyRef"]["name"])
            env[variable["name"]] = cm["data"][ref["configMapKeyRef"]["key"]]
    return env


def secret_refs(resources: list[Resource]) -> set[tuple[str, str]]:
    """Every (Secret, key) the Deployments and Dapr Components read."""
    refs: set[tuple[str, str]] = set()
    for deployment in of_kind(resources, "Deployment"):
        for variable in container(deployment).get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                refs.add((ref["name"], ref["key"]))
    for component in of_kind(resources, "Component"):
        for item in component["spec"]["metadata"]:
            if "secretKeyRef" in item:
                refs.add((item["secretKeyRef"]["name"], item["secretKeyRef"]["key"]))
    for alertmanager in of_kind(resources, "Alertmanager"):
        for path in secret_files(alertmanager_config(resources, alertmanager)):
            mount = mounted_secret(alertmanager, path)
            if mount is not None:
                refs.add(mount)
    return refs


# --- the Alertmanager and the files its configuration reads -------------------------------------

# prometheus-operator's AlertmanagerSpec (monitoring.coreos.com/v1, alertmanager_types.go):
# `secrets` are mounted at /etc/alertmanager/secrets/<secret-name>/<key>, `configMaps` at
# /etc/alertmanager/configmaps/<configmap-name>/<key>, and the other keys of the
# configuration Secret at /etc/alertmanager/config/<key>.
ALERTMANAGER_SECRETS = "/etc/alertmanager/secrets/"
ALERTMANAGER_CONFIG_MAPS = "/etc/alertmanager/configmaps/"
ALERTMANAGER_CONFIG_DIR = "/etc/alertmanager/config/"
ALERTMANAGER_SPEC = {
    "podMetadata", "image", "imagePullPolicy", "version", "imagePullSecrets", "secrets",
    "configMaps", "configSecret", "logLevel", "logFormat", "replicas", "retention", "storage",
    "volumes", "volumeMounts", "externalUrl", "routePrefix", "paused", "nodeSelector",
    "resources", "affinity", "tolerations", "topologySpreadConstraints", "securityContext",
    "serviceAccountName", "listenLocal", "containers", "initContainers", "priorityClassName",
    "additionalPeers", "clusterAdvertiseAddress", "portName", "forceEnableClusterMode",
    "alertmanagerConfigSelector", "alertmanagerConfigNamespaceSelector",
    "alertmanagerConfiguration", "minReadySeconds", "web", "automountServiceAccountToken",
}  # fmt: skip


def alertmanager_config(resources: list[Resource], alertmanager: Resource) -> Any:
    """The configuration the Alertmanager resource runs: its `configSecret`'s alertmanager.yaml."""
    name = (
        alertmanager["spec"].get("configSecret")
        or f"alertmanager-{alertmanager['metadata']['name']}"
    )
    secret = named(resources, "Secret", name)
    assert secret["metadata"]["namespace"] == alertmanager["metadata"]["namespace"], name
    text = secret.get("stringData", {}).get("alertmanager.yaml")
    assert text is not None, f"Secret {name} has no stringData alertmanager.yaml"
    return yaml.safe_load(text)


def secret_files(config: Any) -> set[str]:
    """Every path a `*_file` field of an Alertmanager configuration names."""
    found: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if key.endswith("_file") and isinstance(value, str):
                found.add(value)
            else:
                found |= secret_files(value)
    elif isinstance(config, list):
        for item in config:
            found |= secret_files(item)
    return found


def mounted_secret(alertmanager: Resource, path: str) -> tuple[str, str] | None:
    """The (Secret, key) that the operator mounts at `path` for this Alertmanager, if any."""
    folder, _, key = path.rpartition("/")
    for secret in alertmanager["spec"].get("secrets", []):
        if folder == ALERTMANAGER_SECRETS + secret and key:
            return secret, key
    return None


def unmounted_files(
    resources: list[Resource], alertmanager: Resource, documented: set[tuple[str, str]]
) -> list[str]:
    """The `*_file` paths of the configuration that no mount of the rendered resources provides.

    A path under a listed Secret must also name a key the operator is told to create (the
    secrets table of docs/operations/deploy.md): a file that is mounted but missing fails at
    send time just the same, and `amtool check-config` cannot see either.
    """
    spec = alertmanager["spec"]
    config_secret = named(
        resources,
        "Secret",
        spec.get("configSecret") or f"alertmanager-{alertmanager['metadata']['name']}",
    )
    config_keys = set(config_secret.get("stringData", {})) | set(config_secret.get("data", {}))
    problems = []
    for path in sorted(secret_files(alertmanager_config(resources, alertmanager))):
        mount = mounted_secret(alertmanager, path)
        if mount is not None:
            if mount not in documented:
                problems.append(
                    f"{path}: key {mount[1]!r} of Secret {mount[0]!r} is not documented"
                )
            continue
        folder, _, key = path.rpartition("/")
        if folder + "/" == ALERTMANAGER_CONFIG_DIR and key in config_keys - {"alertmanager.yaml"}:
            continue
        config_maps = {
            ALERTMANAGER_CONFIG_MAPS + name: named(resources, "ConfigMap", name)
            for name in spec.get("configMaps", [])
        }
        if folder in config_maps and key in config_maps[folder].get("data", {}):
            continue
        problems.append(
            f"{path}: nothing the Alertmanager {alertmanager['metadata']['name']!r} mounts"
        )
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_file_the_alertmanager_configuration_reads_is_mounted(overlay: str) -> None:
    resources = render(overlay)
    (alertmanager,) = of_kind(resources, "Alertmanager")
    assert set(alertmanager["spec"]) <= ALERTMANAGER_SPEC, (
        set(alertmanager["spec"]) - ALERTMANAGER_SPEC
    )
    files = secret_files(alertmanager_config(resources, alertmanager))
    # The receivers' secrets: two Slack webhooks and more, PagerDuty, the SMTP password.
    assert len(files) >= 5, files
    assert unmounted_files(resources, alertmanager, documented_secrets()) == []
    # The secrets it lists are created in its namespace, beforehand, not rendered.
    rendered = {s["metadata"]["name"] for s in of_kind(resources, "Secret")}
    for secret in alertmanager["spec"]["secrets"]:
        assert secret not in rendered, secret
        assert f"kubectl -n {NAMESPACE} create secret generic {secret}" in DEPLOY_DOC.read_text(
            encoding="utf-8"
        ), f"{DEPLOY_DOC} shows no command creating {secret} in {NAMESPACE}"


def test_the_mount_check_refuses_files_outside_the_secret_folders() -> None:
    resources = render("prod")
    (alertmanager,) = of_kind(resources, "Alertmanager")
    secret = named(resources, "Secret", alertmanager["spec"]["configSecret"])
    text = secret["stringData"]["alertmanager.yaml"]
    # The layout prometheus-operator does not use: keys straight under secrets/.
    secret["stringData"]["alertmanager.yaml"] = text.replace(
        "/etc/alertmanager/secrets/alertmanager-receivers/", "/etc/alertmanager/secrets/"
    )
    problems = unmounted_files(resources, alertmanager, documented_secrets())
    assert (
        "/etc/alertmanager/secrets/smtp-password: nothing the Alertmanager 'todo' mounts"
        in problems
    )
    secret["stringData"]["alertmanager.yaml"] = text
    documented = documented_secrets() - {("alertmanager-receivers", "pagerduty-routing-key")}
    assert unmounted_files(resources, alertmanager, documented) == [
        "/etc/alertmanager/secrets/alertmanager-receivers/pagerduty-routing-key: key "
        "'pagerduty-routing-key' of Secret 'alertmanager-receivers' is not documented"
    ]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes label selector selects `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def service_deployments(resources: list[Resource]) -> dict[str, Resource]:
    return {name: named(resources, "Deployment", name) for name in SERVICES}


# --- the overlays render ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_resource_into_the_namespace(overlay: str) -> None:
    resources = render(overlay)
    kinds = {resource["kind"] for resource in resources}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "ConfigMap",
        "DaemonSet",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Configuration",
        "Component",
        "Resiliency",
        "Subscription",
        "ServiceMonitor",
        "PodMonitor",
    } <= kinds
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == NAMESPACE, resource["metadata"]
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "todo"
    for name in SERVICES:
        named(resources, "Deployment", name)
        named(resources, "Service", name)


def test_dev_runs_one_replica_and_prod_several() -> None:
    dev, prod = service_deployments(render("dev")), service_deployments(render("prod"))
    assert {name: d["spec"]["replicas"] for name, d in dev.items()} == dict.fromkeys(SERVICES, 1)
    assert all(d["spec"]["replicas"] >= 2 for d in prod.values()), {
        name: d["spec"]["replicas"] for name, d in prod.items()
    }
    budgets = of_kind(render("prod"), "PodDisruptionBudget")
    for name, deployment in prod.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(selects(b["spec"]["selector"], labels) for b in budgets), name


# --- schemas ------------------------------------------------------------------------------------


def builtin(resource: Resource) -> bool:
    """Whether the kind is Kubernetes' own (core or a *.k8s.io group, or apps, policy...)."""
    group = resource["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_validate_against_the_strict_kubernetes_schemas(overlay: str) -> None:
    resources = [r for r in render(overlay) if builtin(r)]
    assert len(resources) >= 10
    for resource in resources:
        errors = kubernetes_errors(resource)
        assert errors == [], f"{resource['kind']} {resource['metadata']['name']}: {errors}"


def kubernetes_errors(resource: Resource) -> list[str]:
    """What is wrong with a built-in resource against Kubernetes' strict schema (empty: valid)."""
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc.message)]
    return []


def test_strict_kubernetes_validation_rejects_a_misspelt_field() -> None:
    deployment = named(render("dev"), "Deployment", "backend")
    container(deployment)["livenesProbe"] = container(deployment).pop("livenessProbe")
    assert any("livenesProbe" in error for error in kubernetes_errors(deployment))


DAPR_CRDS = {
    "Component": "components.yaml",
    "Configuration": "configuration.yaml",
    "Resiliency": "resiliency.yaml",
    "Subscription": "subscription.yaml",
}


def _strict(schema: Any) -> Any:
    """`schema` with unknown fields refused wherever the API server would prune them.

    A structural CRD schema silently drops fields it does not declare (and `kubectl apply
    --validate=strict` refuses them), unless the node preserves unknown fields: a misspelt
    field must fail here, not vanish in the cluster.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@functools.cache
def _dapr_schema(kind: str, version: str) -> Mapping[str, Any]:
    path = DAPR_SCHEMAS / "crds" / DAPR_CRDS[kind]
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema: Mapping[str, Any] = _strict(served["schema"]["openAPIV3Schema"])
            return schema
    raise AssertionError(f"{path} has no version {version!r} of {kind}")


def dapr_errors(resource: Resource) -> list[str]:
    """What is wrong with a Dapr resource against its CRD schema (empty: valid)."""
    kind = resource["kind"]
    if kind not in DAPR_CRDS:
        return [f"no CRD schema for dapr.io kind {kind!r}: copy it into {DAPR_SCHEMAS / 'crds'}"]
    schema = _dapr_schema(kind, resource["apiVersion"].rpartition("/")[2])
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(resource)
    ]
    # The CRDs leave metadata open (the API server checks ObjectMeta itself).
    metadata = resource["metadata"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata.get("name", "")):
        errors.append(f"metadata/name: {metadata.get('name')!r} is not a DNS-1123 label")
    unknown = set(metadata) - {"name", "namespace", "labels", "annotations"}
    if unknown:
        errors.append(f"metadata: unexpected fields {sorted(unknown)}")
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dapr_resources_validate_against_the_dapr_crd_schemas(overlay: str) -> None:
    resources = [r for r in render(overlay) if r["apiVersion"].startswith("dapr.io/")]
    assert {r["kind"] for r in resources} == set(DAPR_CRDS)
    for resource in resources:
        assert dapr_errors(resource) == [], f"{resource['kind']} {resource['metadata']['name']}"


def test_dapr_validation_rejects_unknown_and_mistyped_fields() -> None:
    resources = render("prod")
    subscription = named(resources, "Subscription", "recurring-task-events")
    subscription["spec"]["deadLetterTopik"] = subscription["spec"].pop("deadLetterTopic")
    assert any("deadLetterTopik" in error for error in dapr_errors(subscription))
    configuration = named(resources, "Configuration", "todo-tracing")
    configuration["spec"]["tracing"]["samplingRate"] = 0.1
    assert any("samplingRate" in error for error in dapr_errors(configuration))


Fields = dict[str, Mapping[str, Any]]

# Fields a component's runtime reads that its metadata.yaml lists under another profile only.
RUNTIME_FIELDS = {
    # components-contrib common/component/kafka/auth.go, updateTLSConfig: every TLS
    # connection (any authType but none) trusts caCert when it is set; metadata.yaml declares
    # it under the mTLS profile alone.
    "pubsub.kafka": {"caCert"},
}


def component_schema(component_type: str) -> tuple[Fields, list[Fields]]:
    """The metadata components-contrib declares for a type such as `pubsub.kafka`.

    Returns the fields every component of the type accepts, and each authentication
    profile's own fields (the builtin profiles as the file lists them).
    """
    folder, _, name = component_type.partition(".")
    path = DAPR_SCHEMAS / "components-contrib" / folder / name / "metadata.yaml"
    assert path.is_file(), (
        f"no metadata.yaml for {component_type}: copy components-contrib's "
        f"{folder}/{name}/metadata.yaml into {path.parent} (see {DAPR_SCHEMAS / 'SOURCES.md'})"
    )
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    common = {field["name"]: field for field in spec.get("metadata", [])}
    profiles = [
        {field["name"]: field for field in profile.get("metadata", [])}
        for profile in [
            *spec.get("authenticationProfiles", []),
            *spec.get("builtinAuthenticationProfiles", []),
        ]
    ]
    return common, profiles


def component_errors(component: Resource) -> list[str]:
    """What is wrong with a Component's metadata against components-contrib's (empty: valid).

    Where the profiles are told apart by `authType` (Kafka), its value chooses exactly one
    profile, whose required fields must all be there; otherwise any profile's fields are
    accepted. A field marked sensitive comes from a secretKeyRef, never a literal value.
    """
    component_type = component["spec"]["type"]
    common, profiles = component_schema(component_type)
    items = {item["name"]: item for item in component["spec"]["metadata"]}
    errors = []
    discriminated = [profile for profile in profiles if "authType" in profile]
    if discriminated:
        auth = items.get("authType", {}).get("value")
        chosen = [p for p in discriminated if auth in p["authType"].get("allowedValues", [])]
        if len(chosen) != 1:
            return [f"authType {auth!r} chooses {len(chosen)} authentication profiles, not one"]
        accepted = {**common, **chosen[0]}
        errors += [
            f"{name}: required with authType {auth!r}"
            for name, field in chosen[0].items()
            if field.get("required") and name not in items
        ]
    else:
        accepted = {**common}
        for profile in profiles:
            accepted.update(profile)
    runtime = RUNTIME_FIELDS.get(component_type, set())
    for name, item in items.items():
        if name not in accepted and name not in runtime:
            errors.append(f"{name}: not a field of {component_type}")
            continue
        field = accepted.get(name, {})
        allowed = field.get("allowedValues")
        if allowed and "value" in item and item["value"] not in allowed:
            errors.append(f"{name}: {item['value']!r} is not one of {allowed}")
        if field.get("sensitive") and "secretKeyRef" not in item:
            errors.append(f"{name}: sensitive, must come from a secretKeyRef")
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_component_metadata_names_fields_the_component_accepts(overlay: str) -> None:
    for component in of_kind(render(overlay), "Component"):
        assert component_errors(component) == [], component["metadata"]["name"]


def test_prod_kafka_authenticates_with_sasl_over_tls_and_dev_stays_open() -> None:
    prod = {i["name"]: i for i in named(render("prod"), "Component", "pubsub")["spec"]["metadata"]}
    dev = {i["name"]: i for i in named(render("dev"), "Component", "pubsub")["spec"]["metadata"]}
    assert prod["authType"]["value"] == "password"
    assert prod["saslMechanism"]["value"] in ("SHA-512", "SHA-256")
    for field in ("saslUsername", "saslPassword", "caCert"):
        assert prod[field]["secretKeyRef"]["name"] == "todo-kafka", field
    # With authType password the component speaks TLS unless disableTls says otherwise.
    assert prod.get("disableTls", {}).get("value", "false") == "false"
    assert "skipVerify" not in prod or prod["skipVerify"]["value"] == "false"
    assert dev["authType"]["value"] == "none"
    # Both reach the same cluster, on its TLS and its plain listener.
    assert prod["brokers"]["value"].rpartition(":")[0] == dev["brokers"]["value"].rpartition(":")[0]
    assert prod["brokers"]["value"] != dev["brokers"]["value"]
    # Everything else the base sets is kept.
    assert {k: v for k, v in dev.items() if k not in ("brokers", "authType")} == {
        k: v for k, v in prod.items() if k in dev and k not in ("brokers", "authType")
    }


def test_component_check_refuses_a_literal_password_a_missing_user_and_an_unknown_mechanism() -> (
    None
):
    component = named(render("prod"), "Component", "pubsub")
    metadata = component["spec"]["metadata"]
    for item in metadata:
        if item["name"] == "saslPassword":
            item.pop("secretKeyRef")
            item["value"] = "plain-text"
        if item["name"] == "saslMechanism":
            item["value"] = "MD5"
    component["spec"]["metadata"] = [i for i in metadata if i["name"] != "saslUsername"]
    assert component_errors(component) == [
        "saslUsername: required with authType 'password'",
        "saslMechanism: 'MD5' is not one of ['SHA-512', 'SHA-256', 'PLAINTEXT']",
        "saslPassword: sensitive, must come from a secretKeyRef",
    ]
    for item in component["spec"]["metadata"]:
        if item["name"] == "authType":
            item["value"] = "kerberos"
    assert component_errors(component) == [
        "authType 'kerberos' chooses 0 authentication profiles, not one"
    ]


# --- prometheus-operator kinds, structurally ----------------------------------------------------

# No prometheus-operator schema is on disk: the fields these manifests may use, from its API
# (monitoring.coreos.com/v1), so that a misspelt one fails here.
SERVICE_MONITOR_SPEC = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels"}
POD_MONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
ENDPOINT = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_each_service_under_its_app_id(overlay: str) -> None:
    resources = render(overlay)
    (monitor,) = of_kind(resources, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
    # Without jobLabel, prometheus-operator names the job after the Service.
    assert "jobLabel" not in monitor["spec"]
    selected = [
        s
        for s in of_kind(resources, "Service")
        if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(SERVICES)
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= ENDPOINT
        assert endpoint["path"] == "/metrics"
        for service in selected:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitor_scrapes_the_sidecar_metrics_of_each_service(overlay: str) -> None:
    resources = render(overlay)
    (monitor,) = of_kind(resources, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= POD_MONITOR_SPEC
    selected = [
        d["metadata"]["name"]
        for d in of_kind(resources, "Deployment")
        if selects(monitor["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]
    assert sorted(selected) == sorted(SERVICES)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert set(endpoint) <= ENDPOINT
    # The injector names the daprd container's metrics port dapr-metrics; the port number is
    # the one the annotations ask for.
    assert endpoint["port"] == "dapr-metrics"
    for deployment in service_deployments(resources).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/metrics-port"] == DAPR_METRICS_PORT


@functools.cache
def queried_series() -> frozenset[str]:
    """Every series name a Prometheus rule or a dashboard query selects."""
    from reference_app.ops.promql import selectors
    from reference_app.ops.queries import queries
    from reference_app.ops.rules import groups

    names = {name for query in queries() for name in query.metrics}
    for group in groups():
        for rule in group["rules"]:
            names |= {selector.name for selector in selectors(rule["expr"])}
    return frozenset(names)


def dropped_by(relabelings: list[Resource], series: str) -> bool:
    """Whether Prometheus' metric relabelling drops the series named `series`.

    Only the rules these manifests use are understood (drop or keep on `__name__`); any other
    rule fails, so that a new kind of rule is taught here before it is trusted.
    """
    for rule in relabelings:
        assert rule.get("sourceLabels") == ["__name__"], rule
        # Prometheus anchors the regex at both ends (RE2 syntax, which these patterns share
        # with Python's re).
        matches = re.fullmatch(rule["regex"], series) is not None
        action = rule.get("action", "replace")
        if action == "drop" and matches:
            return True
        if action == "keep" and not matches:
            return True
        assert action in ("drop", "keep"), rule
    return False


def relabelings(overlay: str) -> dict[str, list[Resource]]:
    resources = render(overlay)
    found = {}
    for monitor in of_kind(resources, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            found[f"ServiceMonitor {monitor['metadata']['name']}"] = endpoint.get(
                "metricRelabelings", []
            )
    for monitor in of_kind(resources, "PodMonitor"):
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            found[f"PodMonitor {monitor['metadata']['name']}"] = endpoint.get(
                "metricRelabelings", []
            )
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metric_relabelling_drops_nothing_a_rule_or_dashboard_queries(overlay: str) -> None:
    used = queried_series()
    assert len(used) > 40, used
    for monitor, rules in relabelings(overlay).items():
        assert rules, f"{monitor} keeps every series: no metricRelabelings"
        dropped = sorted(name for name in used if dropped_by(rules, name))
        assert dropped == [], f"{monitor} drops series that rules or dashboards query: {dropped}"


def test_metric_relabelling_drops_only_unqueried_histograms_of_our_catalogue() -> None:
    from reference_app.ops.catalogue import HISTOGRAM_SERIES, SPECS, spec_of

    (rules,) = [r for m, r in relabelings("prod").items() if m.startswith("ServiceMonitor")]
    queried = {found[0].name for name in queried_series() if (found := spec_of(name))}
    dropped = {
        spec.name
        for spec in SPECS.values()
        for suffix in ("", *HISTOGRAM_SERIES)
        if dropped_by(rules, spec.name + suffix)
    }
    assert dropped, "the ServiceMonitor drops none of our series"
    assert all(SPECS[name].type == "histogram" for name in dropped), dropped
    assert not dropped & queried
    # A histogram goes whole: its _bucket, _sum and _count.
    for name in dropped:
        assert all(dropped_by(rules, name + suffix) for suffix in HISTOGRAM_SERIES), name
    # The check itself sees a drop of a queried series.
    assert dropped_by(
        [{"sourceLabels": ["__name__"], "regex": "http_server_.+", "action": "drop"}],
        "http_server_requests_total",
    )
    assert not dropped_by(
        [{"sourceLabels": ["__name__"], "regex": "http_server", "action": "drop"}],
        "http_server_requests_total",
    )


PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Alertmanager"}


def prometheus_rule_errors(resource: Resource) -> list[str]:
    """What is wrong with the structure of a PrometheusRule (empty: well formed)."""
    errors = []
    if resource["apiVersion"] != "monitoring.coreos.com/v1":
        errors.append(f"apiVersion {resource['apiVersion']!r}")
    if set(resource.get("spec", {})) != {"groups"}:
        errors.append(f"spec has {sorted(resource.get('spec', {}))}, expected only groups")
    for group in resource.get("spec", {}).get("groups", []):
        if not group.get("name") or not group.get("rules"):
            errors.append(f"group {group.get('name')!r} needs a name and rules")
        for rule in group.get("rules", []):
            if ("record" in rule) == ("alert" in rule):
                errors.append(f"rule {rule} must be either a record or an alert")
            if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                errors.append(f"rule {rule.get('record') or rule.get('alert')!r} has no expr")
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_kind_is_validated_by_one_of_the_validators(overlay: str) -> None:
    # A kind none of the checks above knows would pass unchecked: teach this file first.
    unchecked = {
        f"{r['apiVersion']} {r['kind']}"
        for r in render(overlay)
        if not builtin(r)
        and not (r["apiVersion"].startswith("dapr.io/") and r["kind"] in DAPR_CRDS)
        and not (
            r["apiVersion"].startswith("monitoring.coreos.com/")
            and r["kind"] in PROMETHEUS_OPERATOR_KINDS
        )
    }
    assert unchecked == set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rules_are_well_formed(overlay: str) -> None:
    # The PrometheusRule is generated into base/monitoring by reference_app/ops.
    for rule_set in of_kind(render(overlay), "PrometheusRule"):
        assert prometheus_rule_errors(rule_set) == [], rule_set["metadata"]["name"]


def test_prometheus_rule_check_rejects_a_rule_that_is_both_record_and_alert() -> None:
    rule_set: Resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "todo"},
        "spec": {"groups": [{"name": "g", "rules": [{"record": "a", "alert": "A", "expr": "1"}]}]},
    }
    assert prometheus_rule_errors(rule_set) == [
        "rule {'record': 'a', 'alert': 'A', 'expr': '1'} must be either a record or an alert"
    ]
    rule_set["spec"]["groups"][0]["rules"] = [{"alert": "A", "expr": "up == 0"}]
    assert prometheus_rule_errors(rule_set) == []


# --- Grafana dashboards -------------------------------------------------------------------------

GRAFANA = ROOT / "reference_app" / "deploy" / "monitoring" / "grafana"
DASHBOARD_LABEL = ("grafana_dashboard", "1")
"""The label Grafana's dashboard sidecar selects ConfigMaps by (its default `label`/`labelValue`)."""


def datasource_uids(node: Any) -> list[str]:
    """The uid of every datasource reference in a dashboard (panels, targets, variables)."""
    found: list[str] = []
    if isinstance(node, dict):
        reference = node.get("datasource")
        if isinstance(reference, dict):
            found.append(str(reference.get("uid")))
        for value in node.values():
            found += datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            found += datasource_uids(item)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_dashboard_ships_as_a_config_map_the_grafana_sidecar_loads(overlay: str) -> None:
    key, value = DASHBOARD_LABEL
    maps = [
        cm
        for cm in of_kind(render(overlay), "ConfigMap")
        if cm["metadata"]["labels"].get(key) == value
    ]
    shipped: dict[str, str] = {}
    for cm in maps:
        # One dashboard per ConfigMap, under a stable name (no hash: updated in place).
        assert len(cm["data"]) == 1, cm["metadata"]["name"]
        assert not re.search(r"-[a-z0-9]{10}$", cm["metadata"]["name"]), cm["metadata"]["name"]
        shipped.update(cm["data"])
    committed = {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted((GRAFANA / "dashboards").glob("*.json"))
    }
    assert len(committed) >= 7
    assert shipped == committed
    (datasource,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text(encoding="utf-8")
    )["datasources"]
    uids = set()
    for name, text in shipped.items():
        dashboard = json.loads(text)
        references = datasource_uids(dashboard)
        assert references, f"{name} queries no datasource"
        # The datasource every query names is the provisioned one.
        assert set(references) == {datasource["uid"]}, name
        uids.add(dashboard["uid"])
    assert len(uids) == len(shipped), "two dashboards share a uid"


# --- sampling, environment, images --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sampling_is_the_same_in_the_sidecars_and_the_services(overlay: str) -> None:
    resources = render(overlay)
    tracing = named(resources, "Configuration", "todo-tracing")["spec"]["tracing"]
    assert tracing["samplingRate"] == SAMPLING_RATE[overlay]
    # A generated ConfigMap (its name hashes its content): changing the ratio rolls the pods.
    shared = config_map(resources, "todo-observability")["metadata"]["name"]
    for deployment in service_deployments(resources).values():
        sources = [s["configMapRef"]["name"] for s in container(deployment)["envFrom"]]
        assert shared in sources, deployment["metadata"]["name"]
    for name, deployment in service_deployments(resources).items():
        settings = resolve_settings(env=container_env(resources, deployment), service_name=name)
        assert settings.sample_ratio == float(SAMPLING_RATE[overlay]), name
        assert settings.environment == ENVIRONMENT[overlay], name
        assert settings.traces_exporter == ("zipkin",), name
        # Spans of one trace land in one Zipkin, from the services and from their sidecars.
        assert settings.zipkin_endpoint == tracing["zipkin"]["endpointAddress"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app_id", SERVICES)
def test_each_service_accepts_the_environment_its_container_gets(overlay: str, app_id: str) -> None:
    resources = render(overlay)
    deployment = named(resources, "Deployment", app_id)
    service = SERVICES[app_id]
    assert container(deployment)["command"] == ["python", "-m", service.module]
    settings = service.settings.from_env(container_env(resources, deployment))
    # The kubelet's probes and the sidecar reach the app through the pod's IP.
    assert settings.host == "0.0.0.0"
    assert settings.environment == ENVIRONMENT[overlay]
    assert settings.jwt_secret == SECRET_VALUES[("todo-jwt", "jwt-secret")] != DEV_JWT_SECRET


def test_prod_keeps_state_outside_the_pods_and_dev_inside() -> None:
    dev, prod = render("dev"), render("prod")

    def settings(resources: list[Resource], app_id: str) -> Any:
        env = container_env(resources, named(resources, "Deployment", app_id))
        return SERVICES[app_id].settings.from_env(env)

    assert settings(dev, "backend").database_url.startswith("sqlite+aiosqlite:////var/lib/todo/")
    assert (
        settings(prod, "backend").database_url == SECRET_VALUES[("todo-database", "database-url")]
    )
    assert settings(dev, "recurring-task-service").idempotency_store == "memory"
    assert settings(prod, "recurring-task-service").idempotency_store == "dapr"
    assert settings(prod, "recurring-task-service").dlq_database_url is not None
    assert settings(prod, "notification-service").dlq_database_url is not None
    assert settings(dev, "notification-service").dlq_database_url is None
    assert settings(dev, "notification-service").smtp_host == "smtp-sink"
    named(dev, "Service", "smtp-sink")
    assert settings(prod, "notification-service").smtp_starttls is True
    # The SQLite file is on a volume: the root filesystem is read-only.
    mounts = container(named(dev, "Deployment", "backend"))["volumeMounts"]
    assert "/var/lib/todo" in {mount["mountPath"] for mount in mounts}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_is_documented_and_not_generated(overlay: str) -> None:
    resources = render(overlay)
    refs = secret_refs(resources)
    assert refs <= set(SECRET_VALUES)
    documented = documented_secrets()
    assert refs <= documented, f"add to the secrets table of {DEPLOY_DOC}: {refs - documented}"
    rendered = {secret["metadata"]["name"] for secret in of_kind(resources, "Secret")}
    assert not rendered & {name for name, _ in refs}, "secrets are created beforehand"


def test_the_secret_placeholders_of_this_test_are_all_referenced() -> None:
    assert secret_refs(render("dev")) | secret_refs(render("prod")) == set(SECRET_VALUES)


def documented_secrets() -> set[tuple[str, str]]:
    """The (Secret, key) rows of the secrets table of docs/operations/deploy.md."""
    rows: set[tuple[str, str]] = set()
    for line in DEPLOY_DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and all(re.fullmatch(r"`[a-z0-9.-]+`", cell) for cell in cells[:2]):
            rows.add((cells[0].strip("`"), cells[1].strip("`")))
    return rows


def test_every_referenced_config_map_is_rendered() -> None:
    for overlay in OVERLAYS:
        resources = render(overlay)
        names = {cm["metadata"]["name"] for cm in of_kind(resources, "ConfigMap")}
        for kind in ("Deployment", "DaemonSet"):
            for workload in of_kind(resources, kind):
                spec = workload["spec"]["template"]["spec"]
                refs = [
                    source["configMapRef"]["name"]
                    for c in spec["containers"]
                    for source in c.get("envFrom", [])
                ] + [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
                assert set(refs) <= names, (overlay, workload["metadata"]["name"], refs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_four_services_run_one_pinned_image(overlay: str) -> None:
    resources = render(overlay)
    images = {container(d)["image"] for d in service_deployments(resources).values()}
    assert len(images) == 1, images
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name, image
    assert tag not in ("", "latest"), image
    if overlay == "prod":
        # A registry to pull from: the first part of the name is a host.
        assert "." in name.partition("/")[0], image


# --- the manifests against the real services ----------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app_id", SERVICES)
def test_dapr_annotations_name_the_app_its_port_and_the_configuration(
    overlay: str, app_id: str
) -> None:
    resources = render(overlay)
    deployment = named(resources, "Deployment", app_id)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    configuration = named(resources, "Configuration", "todo-tracing")
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == app_id
    assert annotations["dapr.io/app-protocol"] == "http"
    assert annotations["dapr.io/config"] == configuration["metadata"]["name"]
    assert annotations["dapr.io/enable-metrics"] == "true"
    assert annotations["dapr.io/metrics-port"] == DAPR_METRICS_PORT
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    # The Service is named after the app id: its name is the Prometheus job.
    service = named(resources, "Service", app_id)
    assert selects(
        {"matchLabels": service["spec"]["selector"]},
        deployment["spec"]["template"]["metadata"]["labels"],
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app_id", SERVICES)
def test_probe_ports_are_the_container_port_the_app_port_and_the_default_port(
    overlay: str, app_id: str
) -> None:
    resources = render(overlay)
    deployment = named(resources, "Deployment", app_id)
    spec = container(deployment)
    (port,) = spec["ports"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    settings = SERVICES[app_id].settings.from_env(container_env(resources, deployment))
    expected = SERVICES[app_id].default_port
    assert port["containerPort"] == expected
    assert int(annotations["dapr.io/app-port"]) == expected
    assert int(annotations["prometheus.io/port"]) == expected
    assert settings.port == expected
    for probe in PROBES:
        target = spec[probe]["httpGet"]["port"]
        assert target in (port["name"], port["containerPort"]), (probe, target)
    service_port = named(resources, "Service", app_id)["spec"]["ports"][0]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("app_id", SERVICES)
def test_probes_have_the_agreed_paths_periods_and_timeouts(overlay: str, app_id: str) -> None:
    resources = render(overlay)
    deployment = named(resources, "Deployment", app_id)
    spec = container(deployment)
    health = resolve_settings(env=container_env(resources, deployment)).health_path
    assert health, "the container's environment turns the health routers off"
    for probe, (suffix, period, timeout) in PROBES.items():
        assert spec[probe]["httpGet"]["path"] == health + suffix, probe
        assert spec[probe]["periodSeconds"] == period, probe
        assert spec[probe]["timeoutSeconds"] == timeout, probe
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == STARTUP_ALLOWANCE_SECONDS


def build(app_id: str, tmp_path: Path, env: Mapping[str, str]) -> FastAPI:
    """The real app of `app_id`, its sidecar unreachable, observability kept in the test.

    The SDK's paths come from the container's environment, so the app serves what the
    manifests probe.
    """
    sidecar = f"http://127.0.0.1:{free_port()}"
    obs = resolve_settings(env=env)
    options: dict[str, Any] = {
        "registry": CollectorRegistry(),
        "traces_exporter": "memory",
        "load_plugins": False,
        "log_stream": io.StringIO(),
        "health_path": obs.health_path,
        "metrics_path": obs.metrics_path,
    }
    if app_id == "frontend":
        return frontend.create_app(frontend.Settings(dapr_endpoint=sidecar), **options)
    if app_id == "backend":
        database = f"sqlite+aiosqlite:///{tmp_path / 'backend.db'}"
        settings = backend.Settings(database_url=database, dapr_endpoint=sidecar)
        return backend.create_app(settings, **options)
    if app_id == "recurring-task-service":
        return recurring.create_app(recurring.Settings(dapr_endpoint=sidecar), **options)
    smtp = notifications.Settings(dapr_endpoint=sidecar, smtp_port=free_port())
    return notifications.create_app(smtp, **options)


Serve = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """`async with serve(app_id) as client`: the app started (lifespan) and a client of it."""
    apps: list[FastAPI] = []

    @asynccontextmanager
    async def serving(app_id: str) -> AsyncIterator[httpx.AsyncClient]:
        resources = render("dev")
        app = build(
            app_id, tmp_path, container_env(resources, named(resources, "Deployment", app_id))
        )
        apps.append(app)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
                yield client

    yield serving
    for app in apps:
        app.state.observability.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("app_id", SERVICES)
async def test_probe_paths_are_served_by_the_app_health_routers(app_id: str, serve: Serve) -> None:
    spec = container(named(render("dev"), "Deployment", app_id))
    async with serve(app_id) as client:
        live = await client.get(spec["livenessProbe"]["httpGet"]["path"])
        assert live.status_code == 200, live.text
        assert live.json()["service"] == app_id
        for probe in ("readinessProbe", "startupProbe"):
            # The sidecar is not there: DOWN (503), but answered by the health router.
            answer = await client.get(spec[probe]["httpGet"]["path"])
            assert answer.status_code in (200, 503), (probe, answer.status_code)
            assert answer.json()["service"] == app_id
            assert "checks" in answer.json()
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "http_server_requests_total" in metrics.text


def announced(subscriptions: list[Resource], app_id: str) -> list[dict[str, Any]]:
    """The declarative Subscriptions scoped to `app_id`, in the shape of GET /dapr/subscribe."""
    entries = []
    for subscription in subscriptions:
        if app_id not in subscription.get("scopes", []):
            continue
        spec = subscription["spec"]
        entry: dict[str, Any] = {
            "pubsubname": spec["pubsubname"],
            "topic": spec["topic"],
            "routes": spec["routes"],
        }
        if "deadLetterTopic" in spec:
            entry["deadLetterTopic"] = spec["deadLetterTopic"]
        entries.append(entry)
    return sorted(entries, key=lambda entry: (entry["pubsubname"], entry["topic"]))


@pytest.mark.anyio
@pytest.mark.parametrize("app_id", SERVICES)
async def test_declarative_subscriptions_equal_what_the_app_announces(
    app_id: str, serve: Serve
) -> None:
    subscriptions = of_kind(render("prod"), "Subscription")
    assert all(s.get("scopes") for s in subscriptions), "every Subscription names its app"
    async with serve(app_id) as client:
        answer = await client.get(SUBSCRIBE_PATH)
    app_entries = answer.json() if answer.status_code == 200 else []
    assert answer.status_code in (200, 404), answer.text
    ordered = sorted(app_entries, key=lambda entry: (entry["pubsubname"], entry["topic"]))
    assert announced(subscriptions, app_id) == ordered
    if app_id in ("recurring-task-service", "notification-service"):
        dead_letter_topics = {e["deadLetterTopic"] for e in ordered if "deadLetterTopic" in e}
        # Each dead-letter topic is itself subscribed to (parked for replay).
        assert dead_letter_topics
        assert dead_letter_topics <= {entry["topic"] for entry in ordered}


# --- Fluent Bit ---------------------------------------------------------------------------------


def fluent_bit_sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    """The sections of a Fluent Bit classic-mode file: `[NAME]` then `Key  Value` lines."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].upper(), {}))
            continue
        assert sections, f"{path}: {raw!r} is outside any section"
        key, _, value = line.partition(" ")
        sections[-1][1][key.lower()] = value.strip()
    return sections


def section(path: Path, kind: str, name: str | None = None) -> dict[str, str]:
    found = [
        entries
        for title, entries in fluent_bit_sections(path)
        if title == kind and (name is None or entries.get("name") == name)
    ]
    assert len(found) == 1, f"{path}: expected one [{kind}] {name or ''}"
    return found[0]


def our_log_line(created: float, *, exc: BaseException | None = None) -> str:
    """A log line as the services write it: the SDK's JsonFormatter, a real LogRecord."""
    record = logging.LogRecord(
        "reference_app.backend",
        logging.ERROR if exc else logging.INFO,
        __file__,
        1,
        "task %s completed",
        ("42",),
        (type(exc), exc, exc.__traceback__) if exc else None,
    )
    record.created = created
    return JsonFormatter(service_name="backend").format(record)


@pytest.mark.parametrize(
    "created",
    [
        datetime.datetime(2026, 11, 26, 9, 0, 0, 123000, tzinfo=datetime.timezone.utc).timestamp(),
        datetime.datetime(
            2026, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.timezone.utc
        ).timestamp(),
        datetime.datetime(2026, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc).timestamp(),
    ],
)
def test_fluent_bit_parser_reads_the_time_our_formatter_writes(created: float) -> None:
    parser = section(FLUENT_BIT / "parsers.conf", "PARSER", "todo_json")
    assert parser["format"] == "json"
    fields = json.loads(our_log_line(created))
    text = fields[parser["time_key"]]
    # Fluent Bit's %L (fractional seconds) is Python's %f; %z reads "Z" in both.
    python_format = parser["time_format"].replace("%L", "%f")
    parsed = datetime.datetime.strptime(text, python_format)
    expected = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    # The formatter truncates to the millisecond.
    assert 0 <= created - parsed.timestamp() < 0.001, (text, expected)
    assert parsed.utcoffset() == datetime.timedelta(0)


def test_our_log_lines_carry_the_fields_fluent_bit_merges_on_one_line() -> None:
    try:
        raise ValueError("smtp down\nsecond line")
    except ValueError as exc:
        line = our_log_line(1_795_000_000.5, exc=exc)
    # One JSON object per line, even with a multi-line stack: the CRI log line stays whole.
    assert "\n" not in line
    cri_line = f"2026-11-26T09:00:00.500000000Z stdout F {line}"
    _time, stream, tag, text = cri_line.split(" ", 3)
    assert (stream, tag) == ("stdout", "F")
    record = json.loads(text)
    assert {
        "timestamp",
        "level",
        "service_name",
        "request_id",
        "user_id",
        "trace_id",
        "span_id",
        "message",
        "context",
    } <= set(record)
    assert record["exception"]["type"] == "ValueError"
    assert record["message"] == "task 42 completed"


def test_fluent_bit_pipeline_tails_our_namespace_and_merges_with_our_parser() -> None:
    config = FLUENT_BIT / "fluent-bit.conf"
    service = section(config, "SERVICE")
    tail = section(config, "INPUT", "tail")
    kubernetes = section(config, "FILTER", "kubernetes")
    parsers = {entries["name"] for _, entries in fluent_bit_sections(FLUENT_BIT / "parsers.conf")}
    assert tail["multiline.parser"] == "cri"
    assert kubernetes["merge_log"] == "On"
    assert kubernetes["keep_log"] == "Off"
    assert kubernetes["merge_parser"] in parsers
    assert kubernetes["match"] == tail["tag"]
    assert kubernetes["kube_tag_prefix"] == tail["tag"].rstrip("*") + "var.log.containers."
    # The kubelet names the files <pod>_<namespace>_<container>-<id>.log.
    container_id = "0" * 64
    ours = f"/var/log/containers/backend-7d9c5b-x2x4q_todo_backend-{container_id}.log"
    other = f"/var/log/containers/coredns-5d78c-abcde_kube-system_coredns-{container_id}.log"
    itself = f"/var/log/containers/fluent-bit-x7k2p_todo_fluent-bit-{container_id}.log"
    assert fnmatch.fnmatch(ours, tail["path"])
    assert not fnmatch.fnmatch(other, tail["path"])
    assert fnmatch.fnmatch(itself, tail["exclude_path"])
    assert not fnmatch.fnmatch(ours, tail["exclude_path"])
    # The files the configuration names are where the DaemonSet mounts them.
    resources = render("prod")
    daemonset = named(resources, "DaemonSet", "fluent-bit")
    pod = daemonset["spec"]["template"]["spec"]
    (fluent_bit,) = pod["containers"]
    mounts = {m["mountPath"].rstrip("/"): m for m in fluent_bit["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir = str(Path(service["parsers_file"]).parent)
    assert fluent_bit["args"] == [f"--config={config_dir}/fluent-bit.conf"]
    cm_name = volumes[mounts[config_dir]["name"]]["configMap"]["name"]
    assert set(named(resources, "ConfigMap", cm_name)["data"]) == {
        "fluent-bit.conf",
        "parsers.conf",
    }
    assert named(resources, "ConfigMap", cm_name)["data"]["parsers.conf"] == (
        FLUENT_BIT / "parsers.conf"
    ).read_text(encoding="utf-8")
    state = mounts[str(Path(tail["db"]).parent)]
    assert not state.get("readOnly", False)
    assert mounts["/var/log"]["readOnly"] is True
    assert fnmatch.fnmatch(itself.rpartition("/")[2], daemonset["metadata"]["name"] + "-*")
    assert (
        pod["serviceAccountName"]
        == named(resources, "ServiceAccount", "fluent-bit")["metadata"]["name"]
    )

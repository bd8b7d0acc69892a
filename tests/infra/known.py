"""What the manifests may refer to: settings the services read and metrics they export."""

from __future__ import annotations

import importlib
from functools import cache

from prometheus_client import REGISTRY
from pydantic_settings import BaseSettings

from services.reporter.settings import ReporterSettings
from shared.settings import ApiSettings, SchedulerSettings, SenderSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    ApiSettings,
    SchedulerSettings,
    SenderSettings,
    ReporterSettings,
)
# The provider stub reads its own few variables (services/provider_stub: __main__ and app).
METRIC_MODULES = (
    "shared.metrics",
    "services.api.observability",
    "services.api.auth_limit",
    "services.reporter.metrics",
)
STUB_ENV = {"STUB_HOST", "STUB_PORT", "STUB_TOKEN", "STUB_SEED", "STUB_FAULTS"}
# Read by uvicorn itself: the proxies whose X-Forwarded-* headers it trusts.
UVICORN_ENV = {"FORWARDED_ALLOW_IPS"}
# Read by the OpenTelemetry SDK (shared/tracing.py turns it on when the endpoint is set).
OTEL_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
}


@cache
def settings_env_names() -> frozenset[str]:
    """Environment variable names (upper case) some service's Settings class reads."""
    names = set()
    for cls in SETTINGS_CLASSES:
        prefix = cls.model_config.get("env_prefix", "") or ""
        names |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    return frozenset(names)


def known_env_names() -> frozenset[str]:
    return settings_env_names() | STUB_ENV | OTEL_ENV | UVICORN_ENV


@cache
def metric_names() -> frozenset[str]:
    """Every series name the services can export (counters with _total, histogram parts)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)  # registers its metrics

    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return frozenset(names)

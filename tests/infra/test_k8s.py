"""The Kubernetes manifests: rendered with kustomize, validated against the API schemas, and
checked for what the services need (ports, probes, env, secrets, selectors, autoscaling)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.settings import ApiSettings
from tests.infra.conftest import K8S, KUSTOMIZATIONS, ROOT
from tests.infra.known import known_env_names, metric_names
from tests.infra.kustomize import Obj, kustomize_command, render_python, render_with_binary

# The oldest Kubernetes release we support (CronJob timeZone, autoscaling/v2 and policy/v1 are
# all GA there) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_GROUPS = {"keda.sh", "monitoring.coreos.com"}
WORKLOADS = ("Deployment", "Job", "CronJob")
SECRET_EXAMPLES = (K8S / "base" / "secret.example.yaml", K8S / "overlays" / "demo" / "secret.yaml")


def group_of(obj: Obj) -> str:
    return obj["apiVersion"].rpartition("/")[0]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(obj: Obj) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: Obj) -> dict[str, str]:
    template = (
        obj["spec"]["jobTemplate"]["spec"]["template"]
        if obj["kind"] == "CronJob"
        else obj["spec"]["template"]
    )
    return template["metadata"]["labels"]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def load_yaml_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


ALL = pytest.mark.parametrize("name", list(KUSTOMIZATIONS))


@pytest.mark.skipif(kustomize_command() is None, reason="no kustomize or kubectl binary")
@ALL
def test_fallback_renderer_agrees_with_kustomize(name: str) -> None:
    command = kustomize_command()
    assert command is not None

    def key(o: Obj) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    real = {key(o): o for o in render_with_binary(KUSTOMIZATIONS[name], command)}
    ours = {key(o): o for o in render_python(KUSTOMIZATIONS[name])}
    assert sorted(ours) == sorted(real)
    for k, obj in real.items():
        assert ours[k] == obj, k


@ALL
def test_built_in_objects_pass_strict_schema_validation(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    checked = 0
    for obj in rendered[name]:
        if group_of(obj) in CUSTOM_GROUPS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {path}: {error}")
        checked += 1
    assert checked >= 10


def test_secret_examples_pass_strict_schema_validation() -> None:
    for path in SECRET_EXAMPLES:
        for obj in load_yaml_documents(path):
            kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)


def test_the_base_never_overwrites_credentials_nor_runs_the_stub(
    rendered: dict[str, list[Obj]],
) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered["base"]}
    # Real credentials are created out of band; applying the base never overwrites them.
    assert ("Secret", "mailing-secrets") not in kinds
    assert ("Deployment", "provider-stub") not in kinds


@ALL
def test_everything_lives_in_the_mailing_namespace(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    for obj in rendered[name]:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "mailing", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mailing"


@ALL
def test_pods_are_hardened_and_bounded(name: str, rendered: dict[str, list[Obj]]) -> None:
    for obj in workloads(rendered[name]):
        spec = pod_spec(obj)
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == 10001, where  # the image's user
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == "mailing", where
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
            image, _, tag = container["image"].rpartition(":")
            assert image and tag and tag != "latest" and "/" not in tag, container["image"]


@ALL
def test_containers_run_real_entry_points(name: str, rendered: dict[str, list[Obj]]) -> None:
    for obj in workloads(rendered[name]):
        for container in pod_spec(obj)["containers"]:
            command = container["command"]
            if command[:2] == ["python", "-m"]:
                module = command[2]
                assert (ROOT / module.replace(".", "/") / "__main__.py").is_file(), module
            else:
                assert command == ["alembic", "upgrade", "head"], command


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@ALL
def test_probes_hit_the_ports_the_services_listen_on(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    expected = {
        "api": ("API_PORT", 8000, "/readyz"),
        "scheduler": ("METRICS_PORT", 9101, "/readyz"),
        "sender": ("METRICS_PORT", 9102, "/readyz"),
        "provider-stub": ("STUB_PORT", 8090, "/healthz"),
    }
    for obj in rendered[name]:
        if obj["kind"] != "Deployment":
            continue
        variable, port, readiness_path = expected[obj["metadata"]["name"]]
        [container] = pod_spec(obj)["containers"]
        assert _env(container)[variable]["value"] == str(port)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        [port_name] = [n for n, number in ports.items() if number == port]
        liveness, readiness = container["livenessProbe"], container["readinessProbe"]
        assert liveness["httpGet"] == {"path": "/healthz", "port": port_name}
        assert readiness["httpGet"] == {"path": readiness_path, "port": port_name}


@ALL
def test_env_and_config_names_are_settings_the_services_read(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    known = known_env_names()
    config = find(rendered[name], "ConfigMap", "mailing-config")
    assert set(config["data"]) <= known, set(config["data"]) - known
    for obj in workloads(rendered[name]):
        for container in pod_spec(obj)["containers"]:
            names = set(_env(container))
            assert names <= known, (obj["metadata"]["name"], names - known)
            for source in container.get("envFrom", []):
                assert source == {"configMapRef": {"name": "mailing-config"}}


@ALL
def test_secret_references_match_the_documented_secret(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    documented = [load_yaml_documents(path)[0] for path in SECRET_EXAMPLES]
    for example in documented:
        assert example["metadata"]["name"] == "mailing-secrets"
    keys = set(documented[0]["stringData"])
    assert all(set(d["stringData"]) == keys for d in documented)
    used: set[str] = set()
    for obj in workloads(rendered[name]):
        spec = pod_spec(obj)
        for container in spec["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "mailing-secrets"
                    used.add(ref["key"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "mailing-secrets"
                used |= {item["key"] for item in volume["secret"]["items"]}
    # Every documented key is used and nothing undocumented is referenced.
    assert used == keys


def test_sender_reads_a_mounted_token_file(rendered: dict[str, list[Obj]]) -> None:
    sender = find(rendered["base"], "Deployment", "sender")
    spec = pod_spec(sender)
    [container] = spec["containers"]
    token_file = Path(_env(container)["PROVIDER_TOKEN_FILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "provider-token"]
    assert token_file.parent == Path(mount["mountPath"])
    [volume] = [v for v in spec["volumes"] if v["name"] == "provider-token"]
    assert volume["secret"]["items"] == [{"key": "PROVIDER_TOKEN", "path": token_file.name}]
    # Readable by the non-root user through its group.
    assert spec["securityContext"]["fsGroup"] == 10001
    assert volume["secret"]["defaultMode"] & 0o040


@ALL
def test_selectors_and_references_resolve(name: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[name]
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        for key, value in selector.get("matchLabels", {}).items():
            if labels.get(key) != value:
                return False
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In"
            if labels.get(expression["key"]) not in expression["values"]:
                return False
        return True

    for deployment in deployments.values():
        assert selects(deployment["spec"]["selector"], pod_labels(deployment))
    for service in services.values():
        targets = [
            d
            for d in deployments.values()
            if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(d))
        ]
        assert len(targets) == 1, service["metadata"]["name"]
        container_ports = {p["name"] for p in pod_spec(targets[0])["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"], pod_labels(d)) for d in deployments.values())
    for scaler in (o for o in objects if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")):
        target = scaler["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] in deployments
        # Autoscaled: a replica count in the Deployment would fight the autoscaler on apply.
        assert "replicas" not in deployments[target["name"]]["spec"]
    for ingress in (o for o in objects if o["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = services[backend["name"]]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        matched = [
            s
            for s in services.values()
            if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert matched, monitor["metadata"]["name"]
        ports = {p["port"] for p in monitor["spec"]["endpoints"]}
        for service in matched:
            assert ports & {p["name"] for p in service["spec"]["ports"]}


def test_ingress_exposes_the_api_and_docs_but_not_metrics(rendered: dict[str, list[Obj]]) -> None:
    ingress = find(rendered["base"], "Ingress", "api")
    paths = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert {"/api", "/docs", "/openapi.json"} <= paths
    assert not paths & {"/", "/metrics"}


def test_scaled_object(rendered: dict[str, list[Obj]]) -> None:
    scaler = find(rendered["base"], "ScaledObject", "sender")
    assert scaler["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaler["spec"]
    assert spec["scaleTargetRef"]["name"] == "sender"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert metadata["serverAddress"].startswith("http")
    # The backlog gauge, not the (bounded) queue length. Every scheduler replica exports the
    # same database-wide value, so it is aggregated with max.
    assert re.fullmatch(r"max\(mailing_backlog_messages(\{[^}]*\})?\)", metadata["query"])
    assert float(metadata["threshold"]) > 0
    assert all(isinstance(value, str) for value in metadata.values())


def test_service_monitors(rendered: dict[str, list[Obj]]) -> None:
    monitors = [o for o in rendered["base"] if o["kind"] == "ServiceMonitor"]
    assert {m["apiVersion"] for m in monitors} == {"monitoring.coreos.com/v1"}
    scraped: set[str] = set()
    for monitor in monitors:
        spec = monitor["spec"]
        assert spec["selector"].get("matchLabels") or spec["selector"].get("matchExpressions")
        assert spec["endpoints"]
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] and endpoint["path"] == "/metrics"
        selector = spec["selector"]
        scraped |= set(selector.get("matchLabels", {}).values())
        for expression in selector.get("matchExpressions", []):
            scraped |= set(expression["values"])
    assert {"api", "scheduler", "sender"} <= scraped


def _rules(rendered: dict[str, list[Obj]]) -> list[dict[str, Any]]:
    rule = find(rendered["base"], "PrometheusRule", "mailing")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)
    rules = [r for g in groups for r in g["rules"]]
    assert all(g["rules"] for g in groups)
    return rules


def _duration_s(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


def test_prometheus_rules_are_well_formed(rendered: dict[str, list[Obj]]) -> None:
    known = metric_names()
    for rule in _rules(rendered):
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        expr = rule["expr"]
        assert isinstance(expr, str) and expr.strip()
        assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]")
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        used = set(re.findall(r"\bmailing_[a-z0-9_]+", expr))
        assert used <= known, (rule["alert"], used - known)


def test_the_required_alerts_exist(rendered: dict[str, list[Obj]]) -> None:
    rules: dict[str, list[dict[str, Any]]] = {}
    for rule in _rules(rendered):
        rules.setdefault(rule["alert"], []).append(rule)
    [down] = rules["MailingProviderDown"]
    assert "mailing_breaker_state" in down["expr"] and "== 2" in down["expr"]
    assert _duration_s(down["for"]) >= 120
    expiry = rules["MailingProviderTokenExpiresSoon"]
    assert all("mailing_provider_token_expiry_timestamp_seconds" in r["expr"] for r in expiry)
    assert all("time()" in r["expr"] for r in expiry)
    [backlog] = rules["MailingBacklogGrowing"]
    assert "deriv(mailing_backlog_messages" in backlog["expr"] and "[15m]" in backlog["expr"]
    assert "> 10000" in backlog["expr"]
    [expiring] = rules["MailingMessagesExpiring"]
    assert (
        'mailing_message_outcomes_total{namespace="mailing", outcome="expired"}' in expiring["expr"]
    )


def test_migration_job_and_report_cronjob(rendered: dict[str, list[Obj]]) -> None:
    job = find(rendered["base"], "Job", "migrate")
    assert pod_spec(job)["restartPolicy"] == "Never"
    cron = find(rendered["base"], "CronJob", "reporter")
    # One report at a time, and its day in UTC whatever the cluster's zone.
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["timeZone"] == "Etc/UTC"
    assert len(cron["spec"]["schedule"].split()) == 5
    assert "--once" in pod_spec(cron)["containers"][0]["command"]


def test_production_overlay(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    # One released image from a registry for every workload, never the local build.
    images = {c["image"] for o in workloads(objects) for c in pod_spec(o)["containers"]}
    [image] = images
    assert "/" in image and not image.endswith(":local")
    assert find(objects, "Ingress", "api")["spec"]["tls"]
    for obj in objects:
        if group_of(obj) == "monitoring.coreos.com":
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not [o for o in objects if o["metadata"]["name"] == "provider-stub"]
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_production_console_signs_in_on_the_ingress_host(rendered: dict[str, list[Obj]]) -> None:
    """The console's public URL is the Ingress's https host (the provider's redirect URI, Secure
    cookies and the origin check all come from it); an issuer is set; the base stays off."""
    objects = rendered["production"]
    config = find(objects, "ConfigMap", "mailing-config")["data"]
    ingress = find(objects, "Ingress", "api")["spec"]
    host = ingress["rules"][0]["host"]
    assert host in ingress["tls"][0]["hosts"]
    assert config["UI_BASE_URL"] == f"https://{host}"
    assert config["OIDC_ISSUER"].startswith("https://")
    assert config["OIDC_CLIENT_ID"] and config["OIDC_ADMIN_GROUPS"] and config["OIDC_VIEWER_GROUPS"]
    assert ApiSettings(
        **{k.lower(): v for k, v in config.items() if k.startswith(("OIDC", "UI"))}
    ).sso_configured
    base = find(rendered["base"], "ConfigMap", "mailing-config")["data"]
    assert base["OIDC_ISSUER"] == ""
    api = find(objects, "Deployment", "api")
    secrets = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for c in pod_spec(api)["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {"OIDC_CLIENT_SECRET", "UI_SESSION_SECRET"} <= secrets


def test_every_overlay_serves_imports_on_the_apis_host(rendered: dict[str, list[Obj]]) -> None:
    """The import's own Ingress (its body limit) answers on the host the API does."""
    for name, objects in rendered.items():
        api = find(objects, "Ingress", "api")["spec"]["rules"][0]["host"]
        imports = find(objects, "Ingress", "api-imports")["spec"]["rules"][0]["host"]
        assert imports == api, name


def test_demo_overlay_points_senders_at_the_stub(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["demo"]
    config = find(objects, "ConfigMap", "mailing-config")
    stub_service = find(objects, "Service", "provider-stub")
    port = stub_service["spec"]["ports"][0]["port"]
    assert config["data"]["PROVIDER_URL"] == f"http://provider-stub:{port}"
    stub = find(objects, "Deployment", "provider-stub")
    token = _env(pod_spec(stub)["containers"][0])["STUB_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "mailing-secrets", "key": "PROVIDER_TOKEN"}
    assert find(objects, "Secret", "mailing-secrets")
    images = {c["image"] for o in workloads(objects) for c in pod_spec(o)["containers"]}
    assert images == {"mailing-service:local"}


def _bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)


def test_the_csv_import_has_its_own_body_limit_and_timeouts(
    rendered: dict[str, list[Obj]],
) -> None:
    """The main Ingress caps bodies at 1 MB; the import's path gets IMPORT_MAX_BYTES,
    streaming (no request buffering) and timeouts as long as an import's BULK_TIMEOUT_S."""
    for overlay in ("base", "production"):
        objects = rendered[overlay]
        config = find(objects, "ConfigMap", "mailing-config")["data"]
        imports = find(objects, "Ingress", "api-imports")
        notes = imports["metadata"]["annotations"]
        prefix = "nginx.ingress.kubernetes.io/"
        assert _bytes(notes[prefix + "proxy-body-size"]) == int(config["IMPORT_MAX_BYTES"])
        assert notes[prefix + "proxy-request-buffering"] == "off"
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            assert float(notes[prefix + timeout]) >= float(config["BULK_TIMEOUT_S"])
        paths = [p for r in imports["spec"]["rules"] for p in r["http"]["paths"]]
        # The REST import and the console's upload form, exactly those paths.
        assert {(p["path"], p["pathType"]) for p in paths} == {
            ("/api/v1/clients/imports", "Exact"),
            ("/ui/imports", "Exact"),
        }
        main = find(objects, "Ingress", "api")
        assert imports["spec"]["rules"][0]["host"] == main["spec"]["rules"][0]["host"]
        assert imports["spec"].get("tls") == main["spec"].get("tls")

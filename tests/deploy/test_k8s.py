"""deploy/k8s: both overlays render (tests/helpers/kustomize.py), every built-in resource validates against the
Kubernetes OpenAPI schemas shipped offline in `kubernetes-validate` (strict: unknown fields fail), the CRD
resources (ServiceMonitor, KEDA ScaledObject) are checked for structure (their CRD schemas are not available
offline here), and the probes, ports, env names, secret keys and metric names match what the service
really exposes; the service's database URL names the PostgreSQL StatefulSet's Service, user and database, and
its password is one Secret key for both, never inlined."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from service.app import create_app
from service.settings import Settings, setting_variables
from tests.helpers.deployfiles import COMPOSE, REPO, SERVICE, compose_model, is_pinned
from tests.helpers.kustomize import find, render
from tests.helpers.monitoring import PROMTOOL, exported_series, metric_names, needs_promtool

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still in wide use; the manifests use nothing newer
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}
POD_LABELS = {"app.kubernetes.io/name": "dcpsfr-inspect"}
LIBPQ_VARIABLES = {"PGPASSWORD"}  # read by the PostgreSQL driver, not by the service's settings


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


def deployment(documents: list[dict]) -> dict:
    return find(documents, "Deployment", "dcpsfr-inspect")


def container(documents: list[dict]) -> dict:
    (only,) = deployment(documents)["spec"]["template"]["spec"]["containers"]
    return only


def env(documents: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in container(documents)["env"]}


@pytest.fixture(scope="module")
def routes() -> set[str]:
    settings = Settings(model_config_name="tiny", device="cpu", data_dir=Path("/nonexistent"))
    return set(create_app(settings).openapi()["paths"])


def test_every_kustomization_names_files_that_exist():
    for kustomization in K8S.rglob("kustomization.yaml"):
        content = yaml.safe_load(kustomization.read_text())
        listed = content.get("resources", []) + [p["path"] for p in content.get("patches", [])]
        for name in listed:
            assert (kustomization.parent / name).exists(), f"{kustomization}: {name} missing"


def test_built_in_resources_validate_against_the_kubernetes_schemas(rendered):
    _, documents = rendered
    kinds = set()
    for document in documents:
        if (document["apiVersion"], document["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)  # raises on any error
        kinds.add(document["kind"])
    assert kinds == {
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "Secret",
        "ConfigMap",
        "PodDisruptionBudget",
        "StatefulSet",
    }


def test_the_validator_really_rejects_a_bad_manifest(rendered):
    _, documents = rendered
    broken = yaml.safe_load(yaml.safe_dump(deployment(documents)))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes_and_cpu_overlay_none(rendered):
    overlay, documents = rendered
    pod = deployment(documents)["spec"]["template"]["spec"]
    resources = container(documents)["resources"]
    device = env(documents)["DCPSFR_DEVICE"]["value"]
    if overlay == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert device == "cuda" and container(documents)["image"] == "dcpsfr-inspect:edge-gpu"
    else:
        assert "nvidia.com/gpu" not in {**resources.get("limits", {}), **resources.get("requests", {})}
        assert "nodeSelector" not in pod
        assert device == "cpu" and container(documents)["image"] == "dcpsfr-inspect:edge-cpu"
    assert "DCPSFR_DATA_DIR" in env(documents)  # the base's env survived the patch


def test_probes_and_ports_match_the_service(rendered, routes):
    _, documents = rendered
    main = container(documents)
    command = main["command"]
    assert command[:3] == ["python", "-m", "service"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": port}
    probes = {kind: main[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] in ports
    service = find(documents, "Service", "dcpsfr-inspect")
    assert service["spec"]["selector"] == POD_LABELS
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert "/metrics" in routes


def test_env_names_are_real_settings_and_secrets_exist(rendered):
    _, documents = rendered
    assert set(env(documents)) - LIBPQ_VARIABLES <= setting_variables()
    assert "DCPSFR_API_KEYS" not in env(documents), "deprecated: the keys file replaces it"
    monitor = find(documents, "ServiceMonitor", "dcpsfr-inspect")
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    secret = find(documents, "Secret", credentials["name"])
    assert credentials["key"] in secret["stringData"]
    password = env(documents)["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["key"] in find(documents, "Secret", password["name"])["stringData"]
    for secret in (d for d in documents if d["kind"] == "Secret"):
        assert all(value == "" for value in secret["stringData"].values()), "no real secret in the repository"


def test_the_keys_file_is_a_mounted_config_map_that_starts_empty(rendered):
    _, documents = rendered
    keys_file = Path(env(documents)["DCPSFR_KEYS_FILE"]["value"])
    pod = deployment(documents)["spec"]["template"]["spec"]
    mount = next(m for m in container(documents)["volumeMounts"] if m["mountPath"] == str(keys_file.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = find(documents, "ConfigMap", volume["configMap"]["name"])
    assert yaml.safe_load(config_map["data"][keys_file.name]) == []  # no keys: the service refuses to start


def postgres(documents: list[dict]) -> tuple[dict, dict]:
    """The PostgreSQL StatefulSet's pod spec and its one container."""
    pod = find(documents, "StatefulSet", "dcpsfr-postgres")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return pod, only


def test_the_database_url_names_the_postgres_service_user_and_database(rendered):
    _, documents = rendered
    url = urlsplit(env(documents)["DCPSFR_DATABASE_URL"]["value"])
    statefulset = find(documents, "StatefulSet", "dcpsfr-postgres")
    service = find(documents, "Service", url.hostname)
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not set(labels.items()) & set(POD_LABELS.items()), "the inspect Service and PDB must not select it"
    _, main = postgres(documents)
    variables = {item["name"]: item.get("value") for item in main["env"]}
    assert url.scheme == "postgresql" and url.password is None
    assert (url.username, url.path) == (variables["POSTGRES_USER"], f"/{variables['POSTGRES_DB']}")
    port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
    assert port["targetPort"] in {p["name"] for p in main["ports"]}


def test_the_database_password_is_one_secret_key_for_both_sides(rendered):
    _, documents = rendered
    _, main = postgres(documents)
    server = {item["name"]: item for item in main["env"]}["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    client = env(documents)["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert server == client
    for item in [*main["env"], *container(documents)["env"]]:
        assert "PASSWORD" not in item["name"] or "value" not in item, f"{item['name']} inlined"


def test_the_database_keeps_its_data_on_its_own_volume_and_is_probed(rendered):
    _, documents = rendered
    statefulset = find(documents, "StatefulSet", "dcpsfr-postgres")
    pod, main = postgres(documents)
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mount = next(m for m in main["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    data = {item["name"]: item.get("value") for item in main["env"]}["PGDATA"]
    assert Path(data).parent == Path(mount["mountPath"])  # a folder in the volume (its root may hold lost+found)
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["exec"]["command"][0] == "pg_isready"
    assert is_pinned(main["image"]) and main["image"].startswith("postgres:")
    assert pod["securityContext"]["runAsUser"] == 999 and pod["securityContext"]["runAsNonRoot"] is True


def test_volumes_products_shared_read_write_weights_read_only(rendered):
    _, documents = rendered
    pod = deployment(documents)["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m for m in container(documents)["volumeMounts"]}
    variables = {name: item.get("value") for name, item in env(documents).items()}
    products = find(documents, "PersistentVolumeClaim", claims["products"])
    assert products["spec"]["accessModes"] == ["ReadWriteMany"]
    assert mounts["products"]["mountPath"] == variables["DCPSFR_DATA_DIR"]
    assert not mounts["products"].get("readOnly", False)
    weights = find(documents, "PersistentVolumeClaim", claims["weights"])
    assert weights["spec"]["accessModes"] == ["ReadOnlyMany"] and mounts["weights"]["readOnly"] is True
    assert mounts["weights"]["mountPath"] == variables["DCPSFR_WEIGHTS_DIR"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's `inspect` user (docker/Dockerfile)


def test_shutdown_timing_fits_in_the_termination_grace_period(rendered):
    _, documents = rendered
    pod = deployment(documents)["spec"]["template"]["spec"]
    pre_stop = container(documents)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = float(env(documents)["DCPSFR_SHUTDOWN_GRACE_S"]["value"])
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + grace
    assert container(documents)["readinessProbe"]["failureThreshold"] == 1  # out of rotation at the first 503


def test_autoscaler_monitor_and_disruption_budget_point_at_the_deployment(rendered):
    _, documents = rendered
    name = deployment(documents)["metadata"]["name"]
    assert deployment(documents)["spec"]["template"]["metadata"]["labels"] == POD_LABELS
    scaler = find(documents, "ScaledObject", name)["spec"]
    assert scaler["scaleTargetRef"]["name"] == name
    assert 2 <= scaler["minReplicaCount"] <= scaler["maxReplicaCount"]
    assert {t["type"] for t in scaler["triggers"]} == {"prometheus"}
    for trigger in scaler["triggers"]:
        assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
        float(trigger["metadata"]["threshold"])
    budget = find(documents, "PodDisruptionBudget", name)["spec"]
    assert budget["selector"]["matchLabels"] == POD_LABELS and budget["maxUnavailable"] < scaler["minReplicaCount"]
    monitor = find(documents, "ServiceMonitor", name)["spec"]
    assert monitor["selector"]["matchLabels"] == POD_LABELS
    service_ports = [p["name"] for p in find(documents, "Service", name)["spec"]["ports"]]
    assert [e["port"] for e in monitor["endpoints"]] == ["http"] and "http" in service_ports
    assert [e["path"] for e in monitor["endpoints"]] == ["/metrics"]


def scaler_queries() -> list[str]:
    documents = render(K8S / "overlays" / "gpu")
    return [t["metadata"]["query"] for t in find(documents, "ScaledObject", "dcpsfr-inspect")["spec"]["triggers"]]


def test_autoscaler_queries_use_only_exported_metrics():
    exported = exported_series()
    queries = scaler_queries()
    assert "dcpsfr_queue_depth" in " ".join(queries) and "dcpsfr_http_request_duration_seconds_bucket" in queries[1]
    for query in queries:
        used = metric_names(query)
        assert used and used <= exported, f"{used - exported} not exported by the service"
        assert re.search(r'route="(/[^"]*)"', query) is None or "/inspect" in query


@needs_promtool
def test_autoscaler_queries_are_valid_promql(tmp_path):
    """promtool parses every query as a recording rule (offline)."""
    rules = {
        "groups": [{"name": "keda", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(scaler_queries())]}]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_stop_grace_period_covers_the_shutdown_grace():
    """Docker sends SIGKILL after stop_grace_period: it must outlast the drain after SIGTERM."""
    inspect = compose_model(COMPOSE, env={"POSTGRES_PASSWORD": "p"})["services"][SERVICE]
    period = inspect["stop_grace_period"]
    assert period.endswith("s")
    assert float(period[:-1]) > Settings.model_fields["shutdown_grace_s"].default

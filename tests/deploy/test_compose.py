"""docker-compose.yml (GPU host) and docker-compose.cpu.yml, checked without a Docker engine: valid against the
official Compose Specification schema, and wired consistently with the Dockerfile, the service settings and
the Prometheus and Grafana files they mount."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from service.settings import Settings
from tests.helpers.deployfiles import (
    COMPOSE,
    COMPOSE_CPU,
    DOCKERFILE,
    GRAFANA,
    PROMETHEUS_CONFIG,
    REPO,
    SERVICE,
    MissingVariable,
    compose_model,
    compose_schema,
    container_process,
    environment_dict,
    is_pinned,
    parse_dockerfile,
)

ENV = {"POSTGRES_PASSWORD": "s3cret-from-env", "DCPSFR_METRICS_API_KEY": "k2"}


@pytest.fixture(scope="module")
def gpu():
    return compose_model(COMPOSE, env=ENV)


@pytest.fixture(scope="module")
def cpu():
    return compose_model(COMPOSE, COMPOSE_CPU, env=ENV)


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes (without the :ro flag)."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        result[target] = source
    return result


def test_both_variants_are_valid_compose_specification(gpu, cpu):
    schema = compose_schema()
    for model in (gpu, cpu):
        jsonschema.validate(model, schema, cls=jsonschema.Draft202012Validator)


def test_schema_check_catches_a_misspelt_key(gpu):
    broken = {**gpu, "services": {**gpu["services"], SERVICE: {**gpu["services"][SERVICE], "helthcheck": {}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema(), cls=jsonschema.Draft202012Validator)


def test_gpu_service_reserves_an_nvidia_gpu_and_runs_on_cuda(gpu):
    service = gpu["services"][SERVICE]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert environment_dict(service["environment"])["DCPSFR_DEVICE"] == "cuda"


def test_cpu_override_drops_the_gpu_and_builds_the_cpu_variant(cpu):
    service = cpu["services"][SERVICE]
    assert "devices" not in service.get("deploy", {}).get("resources", {}).get("reservations", {})
    assert environment_dict(service["environment"])["DCPSFR_DEVICE"] == "cpu"
    args = service["build"]["args"]
    assert args["DEVICE"] == "cpu" and args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert "cuda" not in args["BASE_IMAGE"] and is_pinned(args["BASE_IMAGE"])
    assert parse_dockerfile(build_args=args)[1].base == args["BASE_IMAGE"]
    assert service["image"] != compose_model(COMPOSE, env=ENV)["services"][SERVICE]["image"]


def test_inspection_service_is_restarted_healthchecked_and_keeps_data_on_a_volume(gpu):
    service = gpu["services"][SERVICE]
    assert service["restart"] in ("always", "unless-stopped")
    probe = " ".join(service["healthcheck"]["test"])
    assert "/healthz" in probe
    data_dir = environment_dict(service["environment"])["DCPSFR_DATA_DIR"]
    assert mounts(service)[data_dir] in gpu["volumes"], "the data dir is not on a named volume"
    assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_command_and_port_match_the_dockerfile(gpu):
    service = gpu["services"][SERVICE]
    final = parse_dockerfile()[-1]
    assert service["command"] == list(final.last("CMD").value)
    container_port = service["command"][service["command"].index("--port") + 1]
    assert [p.split(":")[-1] for p in service["ports"]] == [container_port]
    assert [c.value[0] for c in final.all("EXPOSE")] == [container_port]


def test_container_environment_names_are_real_settings_and_parse(monkeypatch):
    """The merged environment (image ENV + compose) is accepted by the service's own settings class."""
    known = {str(info.validation_alias or f"DCPSFR_{name.upper()}") for name, info in Settings.model_fields.items()}
    for files, device in (((COMPOSE,), "cuda"), ((COMPOSE, COMPOSE_CPU), "cpu")):
        _, env = container_process(ENV, *files)
        dcpsfr = {k: v for k, v in env.items() if k.startswith("DCPSFR_")}
        assert set(dcpsfr) <= known, set(dcpsfr) - known
        with monkeypatch.context() as patch:
            for name in known:
                patch.delenv(name, raising=False)
            for name, value in dcpsfr.items():
                patch.setenv(name, value)
            settings = Settings()
        assert settings.api_key_list == [] and str(settings.keys_file) == "/etc/dcpsfr/keys.yaml"
        assert settings.device == device
        assert str(settings.data_dir) == "/data" and str(settings.weights_dir) == "/app/weights"


def test_every_image_is_pinned(gpu, cpu):
    for model in (gpu, cpu):
        for name, service in model["services"].items():
            if "build" not in service:
                assert is_pinned(service["image"]), f"{name}: {service['image']}"


def test_prometheus_scrapes_the_service_with_the_mounted_config(gpu):
    prometheus = gpu["services"]["prometheus"]
    config_target = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert (REPO / mounts(prometheus)[config_target]).resolve() == PROMETHEUS_CONFIG
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    job = next(job for job in scrape if job["job_name"] == "dcpsfr-inspect")
    port = gpu["services"][SERVICE]["command"][-1]
    assert job["static_configs"][0]["targets"] == [f"{SERVICE}:{port}"]
    key_file = job["authorization"]["credentials_file"]
    mounted = {config["target"]: config["source"] for config in prometheus["configs"]}
    assert gpu["configs"][mounted[key_file]]["content"] == ENV["DCPSFR_METRICS_API_KEY"]


def test_grafana_is_provisioned_from_the_mounted_folders(gpu):
    grafana = gpu["services"]["grafana"]
    volumes = mounts(grafana)
    provisioning = REPO / volumes["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in gpu["services"]
    provider = yaml.safe_load((provisioning / "dashboards" / "dcpsfr.yml").read_text())["providers"][0]
    dashboards = Path(provider["options"]["path"])
    assert (REPO / volumes[str(dashboards)]).resolve() == (GRAFANA / "dashboards")
    home = environment_dict(grafana["environment"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).relative_to(dashboards)).is_file()


def test_the_keys_file_is_mounted_and_the_deprecated_keys_variable_is_gone(gpu):
    service = gpu["services"][SERVICE]
    environment = environment_dict(service["environment"])
    assert "DCPSFR_API_KEYS" not in environment and "DCPSFR_ALLOW_ANONYMOUS" not in environment
    mounted = {config["target"]: config["source"] for config in service["configs"]}
    assert gpu["configs"][mounted[environment["DCPSFR_KEYS_FILE"]]]["file"] == "./keys.yaml"
    other = compose_model(COMPOSE, env={**ENV, "DCPSFR_KEYS_PATH": "/srv/keys.yaml"})
    assert other["configs"][mounted[environment["DCPSFR_KEYS_FILE"]]]["file"] == "/srv/keys.yaml"


def test_the_service_uses_the_bundled_postgresql_once_it_is_healthy(gpu):
    service, postgres = gpu["services"][SERVICE], gpu["services"]["postgres"]
    environment = environment_dict(service["environment"])
    url = environment["DCPSFR_DATABASE_URL"]
    assert url == f"postgresql://{postgres['environment']['POSTGRES_USER']}@postgres:5432/dcpsfr"
    assert postgres["environment"]["POSTGRES_DB"] == "dcpsfr"
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert mounts(postgres)["/var/lib/postgresql/data"] in gpu["volumes"], "the database is not on a named volume"
    assert postgres["image"].startswith("postgres:") and is_pinned(postgres["image"])
    other = compose_model(COMPOSE, env={**ENV, "DCPSFR_DATABASE_URL": "postgresql://u@db.example/records"})
    assert environment_dict(other["services"][SERVICE]["environment"])["DCPSFR_DATABASE_URL"].endswith("/records")


def test_the_database_password_comes_from_the_environment_only(gpu):
    service, postgres = gpu["services"][SERVICE], gpu["services"]["postgres"]
    password = ENV["POSTGRES_PASSWORD"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == password
    assert environment_dict(service["environment"])["PGPASSWORD"] == password  # libpq's, not in the URL
    assert password not in COMPOSE.read_text()
    assert password not in environment_dict(service["environment"])["DCPSFR_DATABASE_URL"]
    for missing in ("", None):
        env = {**ENV, "POSTGRES_PASSWORD": missing} if missing is not None else {"DCPSFR_METRICS_API_KEY": "k2"}
        with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
            compose_model(COMPOSE, env=env)

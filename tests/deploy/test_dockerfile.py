"""docker/Dockerfile, checked without a Docker engine: parsed by Docker's own parser, then its promises checked
against the repository (sources, settings, pins, configs) it builds from."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from model.config import available_configs
from service.settings import setting_variables
from tests.helpers.deployfiles import (
    REPO,
    dockerignore_rules,
    flag_value,
    image_env,
    in_build_context,
    is_pinned,
    mount_options,
    parse_dockerfile,
    stage_args,
    substitute,
)

CONTAINER_CMD = ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
CPU_ARGS = {"BASE_IMAGE": "ubuntu:noble-20251001", "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile()


@pytest.fixture(scope="module")
def final(stages):
    return stages[-1]


def test_every_base_image_is_pinned_or_a_stage(stages):
    names = {stage.name for stage in stages}
    for build_args in ({}, CPU_ARGS):
        for stage in parse_dockerfile(build_args=build_args):
            assert stage.base in names or is_pinned(stage.base), f"stage {stage.name}: unpinned base {stage.base!r}"


def test_final_stage_runs_the_service_as_a_non_root_user(final):
    user = final.last("USER")
    assert user is not None, "the final stage has no USER: the service would run as root"
    assert user.value[0].split(":")[0] not in ("root", "0")
    created = " ".join(" ".join(c.value) for c in final.all("RUN"))
    assert re.search(rf"useradd\b.*\b{re.escape(user.value[0])}\b", created), "USER is never created"
    cmd = final.last("CMD")
    assert cmd.json and list(cmd.value) == CONTAINER_CMD
    assert final.last("ENTRYPOINT") is None


def test_healthcheck_probes_healthz_on_the_exposed_port(final):
    health = final.last("HEALTHCHECK")
    assert health is not None and health.value[0] == "CMD"
    probe = " ".join(health.value[1:])
    exposed = [port.split("/")[0] for c in final.all("EXPOSE") for port in c.value]
    port = CONTAINER_CMD[CONTAINER_CMD.index("--port") + 1]
    assert exposed == [port]
    assert f"127.0.0.1:{port}/healthz" in probe
    assert flag_value(health.flags, "start-period"), "no start period: model loading would count as unhealthy"


def test_healthcheck_command_is_valid_python_that_fails_without_a_server(final):
    """The probe is the exec form `python -c ...`; with nothing listening it must exit non-zero."""
    probe = list(final.last("HEALTHCHECK").value[1:])
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], "<healthcheck>", "exec")
    unused = probe[2].replace("127.0.0.1:8000", "127.0.0.1:9")  # the discard port: nothing listens there
    assert subprocess.run([sys.executable, "-c", unused], capture_output=True, timeout=60).returncode != 0


def test_every_copy_and_bind_source_exists_and_is_in_the_build_context(stages):
    rules = dockerignore_rules()
    stage_names = {stage.name for stage in stages}
    checked = 0
    for stage in stages:
        for command in stage.all("COPY") + stage.all("ADD"):
            if flag_value(command.flags, "from") in stage_names:
                continue
            for source in command.value[:-1]:
                assert (REPO / source).exists(), f"{command.original}: {source} does not exist"
                assert in_build_context(source, rules), f"{command.original}: .dockerignore excludes {source}"
                checked += 1
        for command in stage.all("RUN"):
            for flag in command.flags:
                options = mount_options(flag)
                if options.get("type") == "bind" and "from" not in options:
                    assert (REPO / options["source"]).exists()
                    checked += 1
    assert checked >= 3


def test_build_context_has_the_package_but_no_fetched_weights():
    rules = dockerignore_rules()
    for needed in (
        "pyproject.toml",
        "README.md",
        "model/detector.py",
        "service/app.py",
        "station/handshake.py",
        "weights/manifest.json",
    ):
        assert in_build_context(needed, rules), needed
    for excluded in (".venv/bin/python", "weights/edge/clip.safetensors", ".git/HEAD", "tests/conftest.py"):
        assert not in_build_context(excluded, rules), excluded


def test_environment_names_are_real_settings(stages):
    known = setting_variables()
    for stage in stages:
        for name in image_env(stage, stage_args(stage)):
            assert not name.startswith("DCPSFR_") or name in known, f"{name} is not a service setting"


def test_service_environment_points_at_the_volume_and_the_weights(stages, final):
    env = image_env(final, stage_args(final))
    assert env["DCPSFR_DATA_DIR"] in [v for c in final.all("VOLUME") for v in c.value]
    copied = [c.value[-1].rstrip("/") for c in final.all("COPY")]
    assert env["DCPSFR_WEIGHTS_DIR"] in copied
    assert env["DCPSFR_MODEL_CONFIG"] in available_configs()
    assert env["DCPSFR_DEVICE"] == "cuda"
    cpu_final = parse_dockerfile(build_args=CPU_ARGS)[-1]
    assert image_env(cpu_final, stage_args(cpu_final, {"DEVICE": "cpu"}))["DCPSFR_DEVICE"] == "cpu"


def test_torch_pins_match_pyproject(stages):
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    args = stage_args(stages[1])
    for package, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        assert f"{package}=={args[arg]}" in dependencies


def test_cuda_base_matches_the_torch_wheel_index(stages):
    """GPU variant: the CUDA base image and the torch wheels are built for the same CUDA major.minor."""
    base = stages[1].base
    index = stage_args(stages[1])["TORCH_INDEX_URL"]
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", base)
    wheel = re.search(r"/whl/cu(\d+)$", index)
    assert cuda and wheel, (base, index)
    assert wheel.group(1) == cuda.group(1) + cuda.group(2)
    cpu_stage = parse_dockerfile(build_args=CPU_ARGS)[1]
    assert "cuda" not in cpu_stage.base


def test_weights_stage_runs_the_fetch_command_as_written(stages, tmp_path: Path):
    """The build stage's RUN, with MODEL_CONFIG=tiny (no files to download) and a temp weights dir, succeeds."""
    weights = next(stage for stage in stages if stage.name == "weights")
    args = {**stage_args(weights), "MODEL_CONFIG": "tiny"}
    assert stage_args(weights)["MODEL_CONFIG"] in available_configs()
    assert all(Path(c.value[1]).is_relative_to("/app/weights") for c in weights.all("COPY"))
    (tmp_path / "manifest.json").write_bytes((REPO / "weights" / "manifest.json").read_bytes())
    private_heads = tmp_path / "heads" / "tiny.safetensors"  # as a 0600 heads file from the build context
    private_heads.parent.mkdir()
    private_heads.write_bytes(b"x")
    private_heads.chmod(0o600)
    script = substitute(weights.last("RUN").value[0], args).replace("/app/weights", shlex.quote(str(tmp_path)))
    script = re.sub(r"\bpython\b", shlex.quote(sys.executable), script)
    done = subprocess.run(["sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert private_heads.stat().st_mode & 0o004, "the service's non-root user reads what the build put there"
    assert "python -m model.weights fetch" in weights.last("RUN").value[0]

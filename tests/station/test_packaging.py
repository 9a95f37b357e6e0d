"""The station's own distribution (station/pyproject.toml): a wheel with the whole package and the protocol
libraries, nothing of the service's, that runs from where it is installed with torch, the model and the service
blocked."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

REPO = Path(__file__).resolve().parents[2]
SERVICE_ONLY = ("torch", "torchvision", "open-clip-torch", "timm", "faiss-cpu", "fastapi", "uvicorn", "sqlalchemy")
BLOCKED = ("model", "service", "torch", "numpy", "PIL", "fastapi", "starlette")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The station's wheel, built from a copy of station/ (the build leaves nothing in the repository)."""
    tmp = tmp_path_factory.mktemp("station-wheel")
    shutil.copytree(REPO / "station", tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp / "dist"),
        str(tmp / "src"),
    ]
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [built] = (tmp / "dist").glob("dcpsfr_station-*.whl")
    return built


def metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def test_the_wheel_holds_every_station_module_and_the_example_config(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packaged = {n for n in archive.namelist() if not n.startswith("dcpsfr_station-")}
    expected = {f"station/{p.name}" for p in (REPO / "station").glob("*.py")} | {"station/station.example.yaml"}
    assert packaged == expected


def test_the_wheel_requires_the_protocol_libraries_and_nothing_of_the_service(wheel):
    required = [
        line.split(":", 1)[1].strip() for line in metadata(wheel).splitlines() if line.startswith("Requires-Dist:")
    ]
    names = {r.split(">")[0].split("=")[0].split(";")[0].strip().lower() for r in required if "extra ==" not in r}
    assert {"httpx", "pydantic", "prometheus-client", "pyyaml", "pymodbus", "asyncua", "paho-mqtt"} <= names
    assert names.isdisjoint(SERVICE_ONLY)


def test_the_station_and_the_service_carry_one_version():
    station = tomllib.loads((REPO / "station" / "pyproject.toml").read_text())["project"]["version"]
    assert station == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_the_installed_wheel_runs_without_torch_the_model_or_the_service(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    code = (
        f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
        "import runpy, station\nprint(station.__file__)\nsys.argv = ['station', 'codes']\n"
        "runpy.run_module('station', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "site", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first, *table = done.stdout.splitlines()
    assert Path(first).is_relative_to(tmp_path / "site")  # the installed copy, not the repository's
    assert any("CAMERA_TIMEOUT" in line for line in table)


def test_the_top_level_distribution_takes_no_build_folder_of_the_station(tmp_path):
    """`pip wheel ./station` leaves station/build/ (a copy of the package): the top-level distribution, whose packages
    are found by its include patterns (namespace packages too, pyproject's default), must not ship it as
    `station.build`."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("model", "service", "service/api", "station"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").touch()
    (tmp_path / "station/build/lib/station").mkdir(parents=True)
    (tmp_path / "station/build/lib/station/cli.py").touch()
    found = find_namespace_packages(str(tmp_path), include=include)
    assert sorted(found) == ["model", "service", "service.api", "station"]

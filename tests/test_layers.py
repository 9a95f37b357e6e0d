"""Imports go one way: service -> model (only its public `model` package), training -> model, and nothing in the
inference library or the service imports training; the camera client loads no torch (tests/service/client); the
station talks to the service over HTTP only: it imports nothing of `model`, `service` or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers.processes import REPO


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """Every absolute module each .py file under `folder` imports (at any depth: functions' imports too)."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def offenders(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    """`file: module` for each import under `folder` of a module in (or under) one of `forbidden`."""
    return [
        f"{path}: {name}"
        for path, names in imported_modules(folder).items()
        for name in sorted(names)
        if any(name == p or name.startswith(p + ".") for p in forbidden)
    ]


def test_the_library_never_imports_training_or_the_service():
    library = offenders(REPO / "model", ("model.training", "service", "bench", "tests"))
    assert [o for o in library if not o.startswith("model/training/")] == []


def test_training_imports_the_library_never_the_service():
    assert offenders(REPO / "model" / "training", ("service", "bench", "tests")) == []


def test_the_service_imports_only_the_public_model_package():
    """`from model import X` only: the service never reaches into a model submodule (training included)."""
    assert [o for o in offenders(REPO / "service", ("model",)) if not o.endswith(": model")] == []


def test_the_public_model_package_exports_nothing_of_training():
    import model

    assert [name for name, (module, _) in model._EXPORTS.items() if module.startswith("model.training")] == []


STATION_FORBIDDEN = ("model", "service", "bench", "tests", "torch", "numpy", "PIL", "fastapi", "starlette")


# numpy comes with OpenCV (a core dependency); the GenICam pixel conversion loads it once a camera gives frames
STATION_NUMPY = ("station/pixels.py: numpy",)


def test_the_station_imports_nothing_of_the_model_or_the_service():
    assert [o for o in offenders(REPO / "station", STATION_FORBIDDEN) if o not in STATION_NUMPY] == []


def test_the_station_runs_without_torch_the_model_or_the_service():
    """Loaded for real (not only parsed): the whole station, its protocol adapters included, with those blocked."""
    code = (
        f"import sys\nfor name in {STATION_FORBIDDEN!r}:\n    sys.modules[name] = None\n"
        "import station.run, station.cli, station.opencv, station.genicam, station.views, station.modbus,"
        " station.opcua, station.mqtt\n"
        "print(sorted(m for m, mod in sys.modules.items() if mod and m.split('.')[0] in ('model', 'service', 'torch')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_check_finds_a_forbidden_import(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("def f():\n    from model.training.train import train\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert offenders(package, ("model.training",)) == ["pkg/a.py: model.training.train"]

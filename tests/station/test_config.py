"""station.yaml and the command line: the example is valid, every problem is one line, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from station import cli
from station.config import ConfigError, load_config
from station.handshake import FailSafe
from tests.helpers.processes import REPO

EXAMPLE = REPO / "station" / "station.example.yaml"


def example(tmp_path: Path, **changes) -> Path:
    """The example configuration with its camera folder in tmp_path and `changes` (dotted keys) applied."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["camera"]["folder"] = str(tmp_path)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = config
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[key]
        else:
            target[key] = value
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_example_configuration_is_valid(tmp_path):
    config = load_config(example(tmp_path))
    assert config.products.table == {1: "bottle-500ml", 2: "bottle-1l"}
    assert config.handshake.settings().fail_safe == FailSafe.REJECT and config.handshake.settings().acknowledge
    protocols = config.protocol_config()
    assert (protocols.modbus.port, protocols.opcua.port, protocols.mqtt.prefix) == (502, 4840, "inspection")
    assert config.camera.kind == "folder"


def test_every_problem_is_reported_on_its_own_line(tmp_path):
    path = example(
        tmp_path,
        service__url="inspect:8000",
        handshake__fail_safe="pass",
        handshake__inspect_timeout_s=0,
        products__table={1: "bad id!"},
        protocols__modbus__prot=502,
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    lines = raised.value.lines
    assert len(lines) == 5, lines
    expected = [
        "service.url",
        "handshake.fail_safe",
        "handshake.inspect_timeout_s",
        "products.table.1",
        "protocols.modbus.prot",
    ]
    for line, where in zip(sorted(lines), sorted(expected), strict=True):
        assert line.startswith(f"{path}: {where}: "), line


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"products__active": 3}, "products: Value error, active: 3 is neither an index nor a product id"),
        ({"station": None}, "station: Field required"),
        ({"camera__kind": "gige"}, "camera: Input tag 'gige' found using 'kind' does not match"),
        ({"protocols": {}}, "protocols: Value error, no protocol configured: give modbus, opcua and/or mqtt"),
        ({"protocols": None}, "station.yaml: Value error, protocols: missing (modbus, opcua and/or mqtt)"),
        ({"protocols__opcua__port": 502}, "protocols.opcua.port: port 502 is already protocols.modbus.port's"),
        ({"protocols__mqtt__prefix": "line/#"}, "protocols.mqtt.prefix: String should match pattern"),
        ({"trigger": {"kind": "modbus", "port": 1502}}, "trigger: give either protocols.modbus or the older"),
    ],
)
def test_a_wrong_setting_names_itself(tmp_path, changes, message):
    with pytest.raises(ConfigError) as raised:
        load_config(example(tmp_path, **changes))
    assert [message in line for line in raised.value.lines] == [True], raised.value.lines


def test_a_missing_camera_folder_and_a_missing_file_are_errors(tmp_path):
    path = example(tmp_path, camera__folder=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"camera\.folder: .*nowhere is not an existing folder"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "absent.yaml")


def test_check_exits_0_for_a_good_file_and_2_with_one_line_per_error(tmp_path, capsys):
    assert cli.main(["check", "--config", str(example(tmp_path))]) == 0
    bad = example(tmp_path, service__url="nope", handshake__acknowledge="maybe")
    assert cli.main(["check", "--config", str(bad)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)


def test_help_and_the_code_table():
    done = subprocess.run([sys.executable, "-m", "station", "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "run" in done.stdout and "docs/plc.md" in done.stdout
    codes = subprocess.run([sys.executable, "-m", "station", "codes"], capture_output=True, text=True, cwd=REPO)
    assert codes.returncode == 0 and "  3  SERVICE_UNREACHABLE" in codes.stdout


GENICAM = {
    "kind": "genicam",
    "name": "top",
    "device": "GV02",
    "trigger": "Line1",
    "pixel_format": "Mono12",
    "exposure_us": 800,
    "roi": [0, 0, 1024, 768],
    "recipes": {"bottle-1l": {"pixel_format": "BayerRG8", "gain_db": 3}},
}


def test_a_genicam_camera_with_recipes_and_two_views(tmp_path):
    side = {**GENICAM, "name": "side", "device": "GV03", "recipes": {}}
    views = {
        "bottle-1l": [
            {"name": "top", "camera": "top", "product": "b1-top"},
            {"name": "side", "camera": "side", "product": "b1-side"},
        ]
    }
    config = load_config(example(tmp_path, camera=GENICAM, cameras=[side], views=views))
    assert config.camera.settings().roi == (0, 0, 1024, 768) and config.camera.trigger == "Line1"
    assert config.camera.recipes["bottle-1l"].settings().pixel_format == "BayerRG8"
    assert [view.product for view in config.views["bottle-1l"]] == ["b1-top", "b1-side"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"camera": {**GENICAM, "pixel_format": "Mono10p"}}, "camera.genicam.pixel_format: Input should be"),
        ({"camera": {**GENICAM, "roi": [0, 0, 0, 10]}}, "camera.genicam.roi.2: Input should be greater than 0"),
        (
            {"views": {"bottle-1l": [{"name": "top", "camera": "nowhere", "product": "b1"}]}},
            "views.bottle-1l.top: no camera named 'nowhere'",
        ),
        (
            {"views": {"bottle-9": [{"name": "top", "camera": "top", "product": "b9"}]}},
            "'bottle-9' is not a product id",
        ),
    ],
)
def test_a_wrong_genicam_or_view_setting_names_itself(tmp_path, changes, message):
    with pytest.raises(ConfigError) as raised:
        load_config(example(tmp_path, **changes))
    assert [message in line for line in raised.value.lines] == [True], raised.value.lines


def test_the_older_trigger_section_still_means_modbus(tmp_path):
    config = load_config(example(tmp_path, protocols=None, trigger={"kind": "modbus", "port": 1502}))
    protocols = config.protocol_config()
    assert (protocols.modbus.port, protocols.opcua, protocols.mqtt) == (1502, None, None)


@pytest.mark.parametrize("chosen", [["opcua"], ["mqtt"], ["modbus", "mqtt"]])
def test_any_combination_of_protocols_is_valid(tmp_path, chosen):
    config = yaml.safe_load(EXAMPLE.read_text())["protocols"]
    path = example(tmp_path, protocols={name: config[name] for name in chosen})
    protocols = load_config(path).protocol_config()
    assert [name for name in ("modbus", "opcua", "mqtt") if getattr(protocols, name)] == chosen


@pytest.mark.parametrize("views", [{}, {"bottle-1l": [{"name": "top", "camera": "top", "product": "b1-top"}]}])
def test_random_weights_are_refused_unless_the_file_allows_them(tmp_path, views):
    """Off by default; `service.allow_random_weights: true` reaches every request's inspector, one view or many."""
    from station.camera import FolderCamera
    from station.run import make_inspector

    camera = FolderCamera(tmp_path, name="top")
    for allowed in (None, True):
        changes = {"service__allow_random_weights": allowed} if allowed else {}
        config = load_config(example(tmp_path, **changes, **({"views": views} if views else {})))
        assert config.service.allow_random_weights is bool(allowed)
        inspector = make_inspector(config, camera)
        inspectors = list(inspector.http.values()) if views else [inspector]
        assert [i.allow_random_weights for i in inspectors] == [bool(allowed)] * len(inspectors)

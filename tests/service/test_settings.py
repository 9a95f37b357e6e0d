"""Settings and command line: a value the service cannot use is refused at start-up, in one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import service.__main__ as entry
from service.__main__ import parse_args, settings_help
from service.settings import GROUPS, MAX_INT_SETTING, Settings, settings_by_group, unknown_variables
from tests.helpers.apps import inspect, upload
from tests.helpers.images import image_bytes

GOOD_FRAME = image_bytes(48, 40, seed=0)

INT_SETTINGS = sorted(name for name, field in Settings.model_fields.items() if field.annotation in (int, "int"))


def test_there_are_int_settings_to_check():
    assert "archive_keep_ok_every" in INT_SETTINGS and len(INT_SETTINGS) >= 10


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_an_int_setting_past_the_maximum_is_a_settings_error_naming_it(name, monkeypatch):
    monkeypatch.setenv(f"DCPSFR_{name.upper()}", str(10**20))
    with pytest.raises(ValidationError, match=name):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DCPSFR_SHIFTS", "a=06:00-14:00,b=13:00-15:00", "DCPSFR_SHIFTS: Value error, the shifts 'a' and 'b' overlap"),
        ("DCPSFR_SHIFTS", "06:00-24:00", "DCPSFR_SHIFTS: Value error, '06:00-24:00': 24:00 is not a time of day"),
        ("DCPSFR_TIMEZONE", "Mars/Olympus", "DCPSFR_TIMEZONE: Value error, 'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_bad_report_settings_stop_the_start_with_one_line(variable, value, message, monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        entry.load_settings()
    assert str(stopped.value).startswith(f"error: invalid settings: {message}")
    assert "\n" not in str(stopped.value)


def test_report_settings_take_zones_and_shifts(monkeypatch):
    monkeypatch.setenv("DCPSFR_TIMEZONE", "America/Chicago")
    monkeypatch.setenv("DCPSFR_SHIFTS", "day=07:00-19:00,night=19:00-07:00")
    settings = Settings()
    assert (settings.timezone, settings.shifts) == ("America/Chicago", "day=07:00-19:00,night=19:00-07:00")


def test_the_largest_accepted_archive_interval_still_inspects(make_client):
    """The largest accepted int setting works where it is used on every /inspect (beyond 2**53 C sizes overflow,
    so larger values are refused at start-up)."""
    with make_client(archive_keep_ok_every=MAX_INT_SETTING) as client:
        assert upload(client, "widget", GOOD_FRAME).status_code == 201
        answer = inspect(client, "widget", GOOD_FRAME)
        assert answer.status_code == 200, answer.text


def test_an_unusable_data_dir_is_named_in_one_line_without_a_traceback(make_client, tmp_path, caplog):
    """DCPSFR_DATA_DIR under a plain file: /readyz says the store, its path and the variable, not "the model could
    not be loaded: FileNotFoundError", and the log has no traceback for this configuration mistake."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    with make_client(data_dir=blocker / "data") as client:
        answer = client.get("/readyz")
        product_answers = [
            client.get("/products"),
            client.get("/products/widget"),
            client.delete("/products/widget"),
            client.put("/products/widget/threshold", json={"threshold": 0.5}),
            client.get("/products/widget/rules"),
        ]
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert "DCPSFR_DATA_DIR" in detail and str(blocker / "data") in detail, detail
    assert "model could not be loaded" not in detail
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    # the product routes say so too, instead of an empty list and 404s for products that may well exist
    for product_answer in product_answers:
        assert product_answer.status_code == 503, (product_answer.request.url, product_answer.text)
        assert product_answer.json()["detail"] == detail


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_a_usage_error(port, capsys):
    """`--port 99999` is a usage error (exit 2), not a traceback from bind()."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--port", port])
    assert exit_info.value.code == 2
    assert "0..65535" in capsys.readouterr().err


def test_ports_in_range_are_accepted():
    assert parse_args(["--port", "0"]).port == 0
    assert parse_args(["--port", "65535"]).port == 65535


def test_help_shows_each_default_once_and_never_as_none_or_empty():
    """`--help` names each default once, never as "(default: None)" or "(default: )"."""
    text = settings_help()
    assert "(default: None)" not in text and "(default: )" not in text
    runtime_cache = next(line for line in text.splitlines() if "DCPSFR_RUNTIME_CACHE_DIR" in line)
    assert runtime_cache.count("default:") == 1
    assert "(default: edge)" in text


def test_help_lists_the_essential_settings_first_then_the_tuning_groups():
    lines = settings_help().splitlines()
    groups = [line.strip().split(":")[0] for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert groups[0] == "essential" and set(groups) == set(GROUPS)
    essential = lines[
        lines.index("  essential: " + GROUPS["essential"]) + 1 : lines.index("  runtime: " + GROUPS["runtime"])
    ]
    assert [line.split()[0] for line in essential] == [
        "DCPSFR_MODEL_CONFIG",
        "DCPSFR_DATA_DIR",
        "DCPSFR_WEIGHTS_DIR",
        "DCPSFR_DEVICE",
        "DCPSFR_KEYS_FILE",
        "DCPSFR_API_KEYS",
        "DCPSFR_ALLOW_ANONYMOUS",
    ]
    assert sum(len(names) for names in settings_by_group().values()) == len(Settings.model_fields)  # none left out


def test_an_unknown_variable_is_a_warning_naming_the_closest_setting():
    environ = {
        "DCPSFR_MODLE_CONFIG": "paper",  # a typo: the setting would silently keep its default
        "DCPSFR_API_KEY": "k",  # the camera client's old name, one letter from the service's DCPSFR_API_KEYS
        "DCPSFR_CLIENT_API_KEY": "k",  # the client's: not a typo
        "DCPSFR_DATA_DIR": "/data",
        "DCPSFR_QQQ": "x",
        "HOME": "/root",
    }
    warnings = unknown_variables(environ)
    assert warnings == [
        "DCPSFR_API_KEY is not a setting of the service and is ignored; did you mean DCPSFR_API_KEYS? "
        "(DCPSFR_API_KEY was the camera client's; it reads DCPSFR_CLIENT_API_KEY now)",
        "DCPSFR_MODLE_CONFIG is not a setting of the service and is ignored; did you mean DCPSFR_MODEL_CONFIG?",
        "DCPSFR_QQQ is not a setting of the service and is ignored",
    ]


def test_the_service_logs_unknown_variables_at_start(monkeypatch, caplog):
    for name in ("DCPSFR_API_KEYS", "DCPSFR_ALLOW_ANONYMOUS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DCPSFR_MODEL_CONFIG", "tiny")
    monkeypatch.setenv("DCPSFR_MAX_BATCH", "4")
    with caplog.at_level("WARNING"), pytest.raises(SystemExit, match="refusing to serve"):
        entry.main(["--host", "0.0.0.0", "--port", "0"])  # refused (no keys) right after the warnings
    assert any("DCPSFR_MAX_BATCH is not a setting" in r.getMessage() for r in caplog.records)

"""Settings and command line: a value the service cannot use is refused at start-up, in one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.__main__ import parse_args, settings_help
from service.settings import MAX_INT_SETTING, Settings
from tests.helpers.apps import inspect, upload
from tests.helpers.images import image_bytes

GOOD_FRAME = image_bytes(48, 40, seed=0)

INT_SETTINGS = sorted(name for name, field in Settings.model_fields.items() if field.annotation in (int, "int"))


def test_there_are_int_settings_to_check():
    assert "history_size" in INT_SETTINGS and len(INT_SETTINGS) >= 10


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_an_int_setting_past_the_maximum_is_a_settings_error_naming_it(name, monkeypatch):
    monkeypatch.setenv(f"DCPSFR_{name.upper()}", str(10**20))
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_the_largest_accepted_history_size_still_inspects(make_client):
    """DCPSFR_HISTORY_SIZE=1e20 used to start and then answer every /inspect with a 500 (deque OverflowError)."""
    with make_client(history_size=MAX_INT_SETTING) as client:
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
    """`--port 99999` used to start, then die in bind() with a traceback and an abort (exit 134)."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--port", port])
    assert exit_info.value.code == 2
    assert "0..65535" in capsys.readouterr().err


def test_ports_in_range_are_accepted():
    assert parse_args(["--port", "0"]).port == 0
    assert parse_args(["--port", "65535"]).port == 65535


def test_help_shows_each_default_once_and_never_as_none_or_empty():
    """`--help` used to print "(default: WEIGHTS_DIR/runtime-cache) (default: None)" and "(default: )"."""
    text = settings_help()
    assert "(default: None)" not in text and "(default: )" not in text
    runtime_cache = next(line for line in text.splitlines() if "DCPSFR_RUNTIME_CACHE_DIR" in line)
    assert runtime_cache.count("default:") == 1
    assert "(default: edge)" in text

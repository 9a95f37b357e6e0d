"""The API keys file (name, role, sha256), the deprecated DCPSFR_API_KEYS, and `python -m service.keys add`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from service.__main__ import check_keys
from service.keys import (
    ROLES,
    ApiKey,
    KeysFileError,
    configured_keys,
    key_hash,
    legacy_keys,
    load_keys_file,
    main,
    matching_key,
)
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HASH = key_hash("secret")
OTHER = key_hash("other")


def test_a_yaml_file_and_a_json_file_give_the_same_keys(tmp_path):
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text(
        f"- name: anna\n  role: operator\n  sha256: {HASH}\n- name: ben\n  role: admin\n  sha256: {OTHER}\n"
    )
    json_file = tmp_path / "keys.json"
    json_file.write_text(
        json.dumps(
            [{"name": "anna", "role": "operator", "sha256": HASH}, {"name": "ben", "role": "admin", "sha256": OTHER}]
        )
    )
    expected = [ApiKey("anna", "operator", HASH), ApiKey("ben", "admin", OTHER)]
    assert load_keys_file(yaml_file) == expected
    assert load_keys_file(json_file) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: anna", "must be a list of"),
        ("- [1, 2]", "entry 1: must have exactly the fields name, role and sha256"),
        (f"- {{name: anna, role: operator, sha256: {HASH}, key: secret}}", "entry 1: must have exactly the fields"),
        (
            f"- {{name: anna, role: boss, sha256: {HASH}}}",
            "entry 1 (anna): role must be one of operator, engineer, admin",
        ),
        ("- {name: anna, role: admin, sha256: secret}", "sha256 must be 64 lower-case hex digits"),
        (f"- {{name: 'a b', role: admin, sha256: {HASH}}}", "entry 1: name must be"),
        (f"- {{name: a, role: admin, sha256: {HASH}}}\n- {{name: a, role: operator, sha256: {HASH}}}", "unique: a"),
        ("- {name: [unclosed", "not YAML or JSON"),
    ],
)
def test_a_bad_keys_file_is_one_line_naming_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysFileError) as caught:
        load_keys_file(path)
    assert message in str(caught.value) and str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_a_bad_or_empty_keys_file_stops_the_start_with_one_line(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("")
    with pytest.raises(SystemExit) as caught:
        check_keys(Settings(keys_file=path))
    assert str(caught.value).startswith("error: DCPSFR_KEYS_FILE:") and "no keys" in str(caught.value)
    with pytest.raises(SystemExit, match="cannot be read"):
        check_keys(Settings(keys_file=tmp_path / "missing.yaml"))
    assert check_keys(Settings()) is False
    assert check_keys(Settings(api_keys="k")) is True


def test_deprecated_api_keys_are_admins_named_in_order(tmp_path):
    assert legacy_keys(["a", "b"]) == [ApiKey("key-1", "admin", key_hash("a")), ApiKey("key-2", "admin", key_hash("b"))]
    path = tmp_path / "keys.yaml"
    path.write_text(f"- {{name: key-1, role: operator, sha256: {HASH}}}")
    with pytest.raises(KeysFileError, match="key-1"):  # a name that would make the audit log ambiguous
        configured_keys(path, ["a"])


def test_a_key_matches_by_its_hash_and_roles_rank():
    keys = [ApiKey("anna", "operator", HASH), ApiKey("ben", "engineer", key_hash("other"))]
    assert matching_key("secret", keys) == keys[0]
    assert matching_key("other", keys) == keys[1]
    assert matching_key(HASH, keys) is None  # the hash itself is not a key
    assert keys[1].allows("operator") and keys[1].allows("engineer") and not keys[1].allows("admin")
    assert not keys[0].allows("engineer")


@pytest.mark.parametrize("name", ["keys.yaml", "keys.json"])
def test_the_cli_prints_a_new_key_once_and_appends_its_hash(tmp_path, capsys, name):
    path = tmp_path / name
    main(["add", "anna", "--role", "operator", "--file", str(path)])
    first = capsys.readouterr().out.strip()
    main(["add", "ben", "--role", "engineer", "--file", str(path)])
    second = capsys.readouterr().out.strip()
    keys = load_keys_file(path)
    assert keys == [ApiKey("anna", "operator", key_hash(first)), ApiKey("ben", "engineer", key_hash(second))]
    assert first != second and len(first) >= 40 and first not in path.read_text()
    if name.endswith(".json"):
        assert len(json.loads(path.read_text())) == 2
    with pytest.raises(SystemExit, match="a key named 'anna' is there already"):
        main(["add", "anna", "--role", "admin", "--file", str(path)])


def test_the_cli_takes_the_file_from_the_environment(tmp_path, capsys, monkeypatch):
    path = tmp_path / "keys.yaml"
    monkeypatch.setenv("DCPSFR_KEYS_FILE", str(path))
    main(["add", "cleo", "--role", "admin"])
    assert load_keys_file(path) == [ApiKey("cleo", "admin", key_hash(capsys.readouterr().out.strip()))]
    monkeypatch.delenv("DCPSFR_KEYS_FILE")
    with pytest.raises(SystemExit, match="name the keys file"):
        main(["add", "dan", "--role", "admin"])


def role_mentions() -> list[tuple[str, str]]:
    """(file, role) for every `--role NAME` command and `NAME-role key` in the pages, the README and the station's
    example and config, where a newcomer copies a role from."""
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "station").glob("*.y*ml"))]
    files += sorted((REPO / "station").glob("*.py"))
    pattern = re.compile(r"--role\s+([a-z]+)|\b([a-z]+)-role key")
    return [(f.name, a or b) for f in files for a, b in pattern.findall(f.read_text(encoding="utf-8"))]


def test_every_role_the_docs_and_the_station_name_exists():
    """The station's example and config asked for "a camera-role key": no such role, `--role camera` fails."""
    mentions = role_mentions()
    assert len({file for file, _ in mentions}) >= 4, mentions  # the README, service, deployment, plc pages at least
    assert [(file, role) for file, role in mentions if role not in ROLES] == []
    assert ("plc.md", "operator") in mentions and ("station.example.yaml", "operator") in mentions

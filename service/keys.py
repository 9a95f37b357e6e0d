"""Named API keys with a role, from the keys file (DCPSFR_KEYS_FILE: YAML or JSON, a list of `{name, role, sha256}`;
the file holds the keys' hashes, not the keys, so it is not a secret), or from DCPSFR_API_KEYS (deprecated: each
key an admin named key-1, key-2, ...). `python -m service.keys add NAME --role engineer` prints a new random key
once and appends its hash to the file."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROLES = ("operator", "engineer", "admin")  # each may do everything the ones before it may
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
ANONYMOUS = "anonymous"  # the actor when authentication is off
LEGACY_WARNING = (
    "DCPSFR_API_KEYS is deprecated: its keys are admins named key-1, key-2, ...; give each user a named key with a "
    "role in DCPSFR_KEYS_FILE (python -m service.keys add NAME --role operator)"
)


class KeysFileError(ValueError):
    """The keys file cannot be read or is not a list of {name, role, sha256}; the message is one line."""


@dataclass(frozen=True)
class ApiKey:
    """One key: who holds it, what they may do, and the sha256 (hex) of the key."""

    name: str
    role: str
    sha256: str

    def allows(self, role: str) -> bool:
        """Whether this key's role is `role` or above it."""
        return ROLES.index(self.role) >= ROLES.index(role)


def key_hash(key: str) -> str:
    """The sha256 (hex) of a key's UTF-8 text."""
    return hashlib.sha256(key.encode()).hexdigest()


def matching_key(presented: str, keys: list[ApiKey]) -> ApiKey | None:
    """The key whose hash is the presented key's, compared in constant time with every key; None when none."""
    digest = key_hash(presented)
    found = None
    for key in keys:  # no early exit
        if hmac.compare_digest(digest, key.sha256):
            found = key
    return found


def legacy_keys(keys: list[str]) -> list[ApiKey]:
    """DCPSFR_API_KEYS' keys as admins named key-1, key-2, ..."""
    return [ApiKey(f"key-{i}", "admin", key_hash(key)) for i, key in enumerate(keys, start=1)]


def configured_keys(keys_file: Path | None, api_keys: list[str]) -> list[ApiKey]:
    """The keys file's keys and DCPSFR_API_KEYS' (admins named key-1, ...), the file's first; empty: authentication
    off. Raises KeysFileError (one line) for a bad or empty file, or a legacy name the file uses too."""
    keys = load_keys_file(keys_file) if keys_file is not None else []
    if keys_file is not None and not keys:
        raise KeysFileError(f"{keys_file}: no keys (add one: python -m service.keys add NAME --role admin)")
    legacy = legacy_keys(api_keys)
    taken = {key.name for key in keys} & {key.name for key in legacy}
    if taken:
        raise KeysFileError(f"{keys_file}: the names {', '.join(sorted(taken))} are DCPSFR_API_KEYS' keys' names")
    return [*keys, *legacy]


def load_keys_file(path: Path) -> list[ApiKey]:
    """The keys of a YAML or JSON file (JSON is YAML): a list of {name, role, sha256}, names unique. Raises
    KeysFileError (one line, naming the file and the entry) when it cannot be read or is not that."""
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise KeysFileError(f"{path}: cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise KeysFileError(f"{path}: not YAML or JSON: {' '.join(str(err).split())}") from None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise KeysFileError(f"{path}: must be a list of {{name, role, sha256}} entries")
    keys = [_entry(path, n, entry) for n, entry in enumerate(entries, start=1)]
    names = [key.name for key in keys]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise KeysFileError(f"{path}: key names must be unique: {', '.join(twice)}")
    return keys


def _entry(path: Path, n: int, entry: object) -> ApiKey:
    where = f"{path}: entry {n}"
    if not isinstance(entry, dict) or set(entry) != {"name", "role", "sha256"}:
        raise KeysFileError(f"{where}: must have exactly the fields name, role and sha256")
    name, role, sha256 = entry["name"], entry["role"], entry["sha256"]
    if not isinstance(name, str) or not NAME.match(name):
        raise KeysFileError(f"{where}: name must be 1-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise KeysFileError(f"{where} ({name}): role must be one of {', '.join(ROLES)}")
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise KeysFileError(
            f"{where} ({name}): sha256 must be 64 lower-case hex digits, quoted in YAML (the key's hash, not the key)"
        )
    return ApiKey(name, role, sha256)


def add_key(path: Path, name: str, role: str) -> str:
    """Make a random key, append `{name, role, sha256}` to the file (made when missing; kept as JSON when it is
    JSON) and return the key. Raises KeysFileError for a bad file or a name already there."""
    keys = load_keys_file(path) if path.exists() else []
    if any(key.name == name for key in keys):
        raise KeysFileError(f"{path}: a key named {name!r} is there already")
    key = secrets.token_urlsafe(32)
    new = ApiKey(name, role, key_hash(key))
    _entry(path, len(keys) + 1, asdict(new))  # the same checks as reading
    entries = [asdict(k) for k in [*keys, new]]
    as_json = path.suffix == ".json"
    text = json.dumps(entries, indent=2) + "\n" if as_json else yaml.safe_dump(entries, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return key


def main(argv: list[str] | None = None) -> None:
    """`python -m service.keys add NAME --role ROLE [--file PATH]`: print the new key once (it is not stored)."""
    parser = argparse.ArgumentParser(prog="python -m service.keys", description="Manage the API keys file.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a key, print it once, append its hash to the keys file")
    add.add_argument("name", help="who holds the key (shown in the audit log)")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--file", type=Path, default=None, help="the keys file (default: $DCPSFR_KEYS_FILE)")
    args = parser.parse_args(argv)
    path = args.file or _file_from_environment()
    if path is None:
        sys.exit("error: name the keys file: --file PATH or DCPSFR_KEYS_FILE")
    try:
        key = add_key(path, args.name, args.role)
    except KeysFileError as err:
        sys.exit(f"error: {err}")
    print(key)
    print(f"added {args.name} ({args.role}) to {path}; the key is shown only now", file=sys.stderr)


def _file_from_environment() -> Path | None:
    value = os.environ.get("DCPSFR_KEYS_FILE", "")
    return Path(value) if value else None


if __name__ == "__main__":
    main()

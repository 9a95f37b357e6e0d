"""How the client names a file it did not name itself, whatever bytes its name holds.

A POSIX file name is bytes; Python shows the bytes that are not UTF-8 as lone surrogates (`b'caf\\xe9.png'` is
`'caf\\udce9.png'`), which SQLite, JSON readers and HTTP headers refuse. So each use gets its own form:

- `display_name`: for logs, the journal and JSON files. Valid, printable UTF-8 names are kept as they are; bytes
  that are not UTF-8 become `\\xe9`, control characters `\\n`, `\\x1b`, ... (readable, one line).
- `upload_name`: the multipart file name sent to the service. A valid, printable name is sent as it is; any other
  is sent as its `safe_stem` plus its suffix.
- `safe_stem`: the stem of the result files. Letters, digits, `.`, `_` and `-` are kept; when anything had to
  change (another character, a leading or trailing `.`/`_`, a name over `MAX_KEPT` characters, a Windows device
  name), `-` and the first 10 hex digits of the SHA-256 of the original name's bytes are appended, so two names
  never end up with one stem by losing characters.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import PurePath

MAX_KEPT = 100  # characters of a stem kept as is: <stem>.error.json and its temporary name stay far below 255 bytes
NAME_HASH_CHARS = 10
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
WINDOWS_DEVICES = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?", re.IGNORECASE)


def name_bytes(name: str) -> bytes:
    """The file name's bytes as the file system holds them (undoing Python's surrogate escapes)."""
    return os.fsencode(name)


def is_plain(name: str) -> bool:
    """Whether a name is valid UTF-8 without control characters: usable as it is in logs, JSON and HTTP."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return name.isprintable()


def display_name(name: str) -> str:
    """A name as one line of valid text (see the module docstring); unchanged when `is_plain`."""
    if is_plain(name):
        return name
    text = name_bytes(name).decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def name_hash(name: str) -> str:
    """10 hex digits of the SHA-256 of the name's bytes."""
    return hashlib.sha256(name_bytes(name)).hexdigest()[:NAME_HASH_CHARS]


def safe_stem(name: str) -> str:
    """The output stem of a file name (see the module docstring): `frame.png` -> `frame`,
    `瓶.png` -> `frame-<hash>`, `café.png` -> `caf_-<hash>`."""
    stem = PurePath(name).stem
    kept = UNSAFE.sub("_", stem).strip("._")[:MAX_KEPT]
    if kept == stem and WINDOWS_DEVICES.fullmatch(kept) is None:
        return kept
    return f"{kept or 'frame'}-{name_hash(name)}"


def upload_name(name: str) -> str:
    """The file name to send in a multipart upload: `name` when `is_plain`, else its safe stem and suffix."""
    if is_plain(name):
        return name
    suffix = PurePath(name).suffix
    return safe_stem(name) + (suffix.lower() if UNSAFE.search(suffix[1:]) is None else "")

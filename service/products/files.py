"""A product's folder on disk: the pointer, the version folders, the per-product files and the writer lock (the
layout is drawn in service.products.store, which says how writers and readers use them across replicas)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model import fsync_dir, fsync_file, write_atomic
from service.decisions.rules import AcceptanceRules, sets_something
from service.decisions.thresholds import Calibration

log = logging.getLogger(__name__)

PRODUCT_FILE = re.compile(r"^(?!v[0-9]+$)(?!current\.json$)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
POINTER = "current.json"
PRODUCT_META = "product.json"
RULES_FILE = "rules.json"
CALIBRATION_FILE = "calibration.json"
LOCK = ".lock"
VERSION_DIR = re.compile(r"^v([0-9]+)$")
LOCK_STALE_S = 30.0  # a lock is held for milliseconds; one this old was left by a killed writer
LOCK_WAIT_S = LOCK_STALE_S + 15.0  # longer than the staleness, so a waiting writer can break a dead lock
LOCK_POLL_S = 0.005

Stat = tuple[int, int, int]  # (inode, mtime_ns, size) of a pointer file


class StoreError(OSError):
    """The store could not be written; the previous state is untouched (HTTP 507)."""


def storage_failure(action: str, root: Path, err: BaseException) -> StoreError:
    """The StoreError of a failed `action` ("store product 'p'") in the data dir `root`: names the folder and the
    library's error
    (OSError, safetensors' SafetensorError, numpy's or Pillow's errors: a full or read-only disk raises any of them)."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return StoreError(
        f"could not {action} in the data dir {root} ({type(err).__name__}: {reason}); "
        "check the free space and permissions of the volume behind DCPSFR_DATA_DIR"
    )


def named_exactly(folder: Path) -> bool:
    """Whether `folder`'s parent lists an entry named exactly `folder.name` (case included). On a case-insensitive
    volume (SMB, NAS, macOS) `bottle/` opens `Bottle/`; the listing tells them apart there as on ext4."""
    try:
        return folder.name in os.listdir(folder.parent)
    except (FileNotFoundError, NotADirectoryError):
        return False


def case_twin(root: Path, product_id: str) -> str | None:
    """The product folder in `root` whose name differs from `product_id` only by case (str.casefold), or None."""
    key = product_id.casefold()
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((n for n in sorted(names) if n != product_id and n.casefold() == key and pointer_stat(root / n)), None)


def read_rules(folder: Path) -> dict[str, Any]:
    """The product's rules file as Product fields: {"rules": AcceptanceRules | None, "rules_version": int}."""
    try:
        content = json.loads((folder / RULES_FILE).read_text())
    except FileNotFoundError:
        return {"rules": None, "rules_version": 0}
    rules = content.get("rules")
    return {
        # rules that set nothing (stored before such rules were refused) are no rules
        "rules": AcceptanceRules.model_validate(rules) if rules is not None and sets_something(rules) else None,
        "rules_version": int(content.get("rules_version", 0)),
    }


def read_recalibration(folder: Path, uid: str) -> dict[str, Any]:
    """{"calibration": Calibration} from calibration.json when it belongs to version `uid`, else {}."""
    try:
        content = json.loads((folder / CALIBRATION_FILE).read_text())
    except FileNotFoundError:
        return {}
    return {"calibration": Calibration.from_dict(content["calibration"])} if content.get("uid") == uid else {}


def checked_file_name(name: str) -> str:
    """The per-product file name unchanged when PRODUCT_FILE allows it; raises ValueError otherwise."""
    if PRODUCT_FILE.fullmatch(name) is None:
        raise ValueError(f"invalid per-product file name {name!r}")
    return name


def pointer_uid(pointer: dict[str, Any]) -> str:
    """The pointer's version uid (`v<N>` for pointers written before uids existed)."""
    return str(pointer.get("uid") or f"v{pointer['version']}")  # pointers written before uids existed


def pointer_stat(folder: Path) -> Stat | None:
    """(inode, mtime_ns, size) of the folder's pointer file, None when there is none."""
    try:
        st = os.stat(folder / POINTER)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_pointer(folder: Path) -> dict[str, Any] | None:
    """The folder's pointer as a dict, None when there is none."""
    try:
        return json.loads((folder / POINTER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


class ProductMissing(FileNotFoundError):
    """The product's folder is not there (never created, or deleted)."""


class ProductLock:
    """A held product lock; `moved` is set when the locked folder was renamed away (nothing to release)."""

    moved = False  # the folder holding the lock was renamed away (delete): nothing to release


@contextmanager
def product_lock(folder: Path, create: bool) -> Iterator[ProductLock]:
    """The product's writer lock: `.lock` created exclusively. FileNotFoundError if the folder is absent
    and `create` is false; StoreError after LOCK_WAIT_S."""
    path = folder / LOCK
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            break_if_stale(path)
        except FileNotFoundError:
            if not create:
                raise ProductMissing(f"no product folder {folder}") from None
        if time.monotonic() > deadline:
            raise StoreError(f"product {folder.name!r} is locked by another writer ({path}); retry shortly")
        time.sleep(LOCK_POLL_S)
    try:
        os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    lock = ProductLock()
    try:
        yield lock
    finally:
        if not lock.moved:
            path.unlink(missing_ok=True)


def break_if_stale(path: Path) -> None:
    """Remove a lock file older than LOCK_STALE_S (left by a killed writer), renaming it first."""
    try:
        age_s = time.time() - path.stat().st_mtime
        if age_s > LOCK_STALE_S:
            log.warning("breaking a stale lock (%.0f s old, its writer died): %s", age_s, path)
            stale = path.with_name(f".stale-lock.{uuid.uuid4().hex}.tmp")  # debris by model.files.is_temporary
            os.rename(path, stale)
            stale.unlink()
    except FileNotFoundError:
        pass


def version_dirs(folder: Path) -> dict[int, Path]:
    """The folder's version directories by number: {N: <folder>/v<N>}."""
    return {int(m.group(1)): e for e in folder.iterdir() if (m := VERSION_DIR.fullmatch(e.name))}


def remove_versions(folder: Path, which: Callable[[int], bool]) -> None:
    """Delete the version directories whose number `which` selects (errors ignored)."""
    for version, path in version_dirs(folder).items():
        if which(version):
            shutil.rmtree(path, ignore_errors=True)


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write `content` as JSON to `path` atomically (model.files.write_atomic)."""
    write_atomic(path, json.dumps(content).encode())


def fsync_tree(folder: Path) -> None:
    """fsync every file in `folder` (recursively) and the folders themselves."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)

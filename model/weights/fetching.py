"""The explicit fetch: the backbone files a config needs, downloaded from their hub into the weights folder.

What is fetched is what the configured mode loads, in the order it is needed: DINOv2 first (every mode), CLIP only
for the full mode (a trained heads file `heads/<config>.safetensors` is present) or when asked (`with_clip`).
Files already present and matching their sha256 are kept; a corrupt one is downloaded again. The download itself
(resume, retries, deadline, verification) is `model.weights.hub`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.files import is_temporary, sha256_of
from model.weights import (
    checksum_path,
    expected_sum,
    heads_path,
    manifest_entries,
    readable_file_mode,
    source_label,
    write_checksum,
)
from model.weights.hub import Deadline, FetchError, HubFile, HubOptions, download

log = logging.getLogger(__name__)

ROLE_ORDER = ("dino", "clip")  # DINOv2 serves every mode; CLIP only the full one


@dataclass(frozen=True)
class FetchProgress:
    """Where a fetch stands: files and bytes of the files it downloads (files already present do not count)."""

    config: str
    files_total: int
    files_done: int = 0
    bytes_total: int = 0  # the manifest's approximate sizes until the hub tells the exact ones
    bytes_done: int = 0
    file: str = ""  # the file downloading now ("" when none)

    def describe(self) -> str:
        """One line, e.g. "downloading the edge weights: 43.1 of 88.2 MB, file 1 of 1 (edge/dinov2-....safetensors)"."""
        if self.files_done >= self.files_total:
            return f"the {self.config} weights are fetched; the model is loading"
        return (
            f"downloading the {self.config} weights: {self.bytes_done / 1e6:.1f} of {self.bytes_total / 1e6:.1f} MB, "
            f"file {self.files_done + 1} of {self.files_total} ({self.file})"
        )


def needed_roles(config_name: str, weights_dir: Path, with_clip: bool = False) -> list[str]:
    """The roles (dino, clip) the config's mode loads, DINOv2 first; CLIP when a trained heads file is present (full
    mode) or `with_clip`. Raises ConfigError for a config the manifest does not know."""
    entries = manifest_entries(config_name, weights_dir)
    full = with_clip or heads_path(weights_dir, config_name).is_file()
    return [role for role in ROLE_ORDER if role in entries and (role != "clip" or full)]


def hub_file(entry: dict[str, Any]) -> HubFile:
    """The hub file a manifest entry names: repository, file, revision and pinned sha256."""
    hub = entry["hub"]
    return HubFile(hub["repo"], hub["filename"], hub["revision"], entry.get("sha256") or None)


def fetch(
    config_name: str,
    weights_dir: Path,
    *,
    with_clip: bool = False,
    force: bool = False,
    options: HubOptions | None = None,
    on_progress: Callable[[FetchProgress], None] | None = None,
) -> list[Path]:
    """Download the backbone files `config_name` needs (see the module docstring) into `weights_dir`; returns their
    paths, verified. Raises ConfigError for an unknown config, FetchError (one line) when a download fails."""
    options = options or HubOptions()
    entries = manifest_entries(config_name, weights_dir)
    roles = needed_roles(config_name, weights_dir, with_clip)
    paths = {role: weights_dir / entries[role]["file"] for role in roles}
    missing = [role for role in roles if force or not _present(entries[role], paths[role])]
    sizes = {role: int(entries[role].get("size_mb", 0) * 1e6) for role in missing}
    progress = FetchProgress(config_name, files_total=len(missing), bytes_total=sum(sizes.values()))
    report = on_progress or (lambda _: None)
    deadline = Deadline(options.deadline_s)
    for done_before, role in enumerate(missing):
        entry, path = entries[role], paths[role]
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_debris(path)
        base = sum(sizes[r] for r in missing[:done_before])
        progress = replace(progress, files_done=done_before, file=entry["file"], bytes_done=base)
        report(progress)
        log.info("%s: downloading %s (~%s MB)", path, source_label(entry["source"]), entry.get("size_mb", "?"))

        def on_bytes(done: int, total: int | None, role: str = role, base: int = base) -> None:
            nonlocal progress
            if total is not None and total != sizes[role]:
                sizes[role] = total
                progress = replace(progress, bytes_total=sum(sizes.values()))
            progress = replace(progress, bytes_done=base + done)
            report(progress)

        try:
            write_checksum(path, download(hub_file(entry), path, options, deadline, on_bytes))
        except FetchError:
            raise
        except OSError as err:  # the folder, not the network: one line too
            raise FetchError(
                f"{hub_file(entry).label}: cannot write {path} ({err.strerror or err}): check the folder's "
                "permissions and free disk space"
            ) from err
    report(replace(progress, files_done=len(missing), file=""))
    return [paths[role] for role in roles]


def _present(entry: dict[str, Any], path: Path) -> bool:
    """A present file that matches its sha256 (kept); a corrupt or unverifiable one is deleted (downloaded again)."""
    if not path.is_file():
        return False
    expected = expected_sum(entry, path)
    if expected is not None and sha256_of(path) == expected:
        log.info("%s: present and verified", path)
        _make_readable(path)
        return True
    log.warning("%s: %s: downloading it again", path, "corrupt" if expected else "no sha256 to verify it against")
    path.unlink()
    return False


def _make_readable(path: Path) -> None:
    """Files an older fetch wrote private (0600) get the umask's mode, so the service's user reads them too."""
    mode = readable_file_mode()
    for file in (path, checksum_path(path)):
        if file.is_file() and stat.S_IMODE(file.stat().st_mode) & mode != mode:
            try:
                os.chmod(file, stat.S_IMODE(file.stat().st_mode) | mode)
            except PermissionError:
                log.warning("%s: not readable by other users, and not ours to change (chmod a+r)", file)


def _remove_debris(path: Path) -> None:
    """Temporary files an interrupted older fetch left beside `path` (never the resumable `.part`)."""
    for debris in path.parent.glob(f".{path.name}.*"):
        if is_temporary(debris.name):
            debris.unlink(missing_ok=True)

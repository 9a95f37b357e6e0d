"""Download MVTec AD and VisA from their official sources: licence first, resumable, sha256-verified, safe extraction.

Sources and checksums are the ones anomalib uses (`DOWNLOAD_INFO` in anomalib's
src/anomalib/data/datamodules/image/mvtecad.py and .../visa.py; anomalib verifies them as sha256 with
`check_hash` in src/anomalib/data/utils/download.py). The checksums were not re-verified here: this machine has
no internet. A download whose sha256 differs is refused, never extracted.

Layouts after extraction (what `model.training.data.datasets` reads, no conversion needed):
- MVTec AD: `<root>/<category>/{train,test,ground_truth}/...`, read as `mvtec:<root>`.
- VisA: `<root>/<category>/Data/{Images,Masks}/...` plus the split csv `<root>/split_csv/1cls.csv`, read as
  `visa:<root>`. The loader follows the csv (the 1-class split of spot-diff and anomalib), so the images are not
  copied into a second, MVTec-style tree.

Nothing here runs at import time or from the detector: only `python -m model.training.data fetch` and
`model.training.reproduce`.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm

from model.files import sha256_of
from model.training.data.datasets import DatasetError, open_dataset

STAMP_NAME = ".fetched.json"
EXTRACT_RATIO = 1.1  # extracted size / archive size: PNG and JPEG barely compress, so about the archive's size


class FetchError(RuntimeError):
    """A download or extraction could not be done; the message is one line that says what to do."""


class OfflineError(FetchError):
    """The source host cannot be reached (no internet, DNS, proxy, firewall)."""


class ChecksumError(FetchError):
    """The downloaded archive's sha256 is not the published one; it was deleted, nothing was extracted."""


class UnsafeArchiveError(FetchError):
    """An archive member would land outside the dataset folder (or is a link, device or fifo that could)."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from and what the user agrees to by downloading it."""

    kind: str  # "mvtec" or "visa": the KIND of `KIND:PATH`
    title: str
    url: str
    sha256: str
    licence: str
    licence_url: str
    attribution: str
    archive_gb: float  # approximate, from public descriptions; not measured here
    categories: int

    @property
    def archive_name(self) -> str:
        """The archive's file name, from the URL's path (`<kind>.archive` when the path has none)."""
        return PurePosixPath(urlsplit(self.url).path).name or f"{self.kind}.archive"

    def licence_notice(self) -> str:
        """The text printed before a download: licence, attribution, source URL, size and sha256 prefix."""
        return (
            f"{self.title} is licensed {self.licence} ({self.licence_url}). {self.attribution} "
            f"By downloading it you accept that licence.\n"
            f"source: {self.url} (~{self.archive_gb:.1f} GB, sha256 {self.sha256[:16]}…)"
        )


SOURCES: dict[str, DatasetSource] = {
    "mvtec": DatasetSource(
        kind="mvtec",
        title="MVTec AD",
        url=(
            "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/"
            "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz"
        ),
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        licence="CC BY-NC-SA 4.0",
        licence_url="https://creativecommons.org/licenses/by-nc-sa/4.0/",
        attribution="Non-commercial use only; cite Bergmann et al., CVPR 2019 and IJCV 2021 (MVTec Software GmbH).",
        archive_gb=4.9,
        categories=15,
    ),
    "visa": DatasetSource(
        kind="visa",
        title="VisA (Visual Anomaly, Amazon)",
        url="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        sha256="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
        licence="CC BY 4.0",  # the dataset's own README (amazon-science/spot-diff); anomalib's docstring differs
        licence_url="https://creativecommons.org/licenses/by/4.0/",
        attribution="Cite Zou et al., SPot-the-Difference, ECCV 2022.",
        archive_gb=1.9,
        categories=12,
    ),
}


def source_for(kind: str, url: str | None = None, sha256: str | None = None) -> DatasetSource:
    """The official source of `kind`, with the URL and/or checksum replaced (a mirror, or a test server)."""
    if kind not in SOURCES:
        raise FetchError(f"unknown dataset {kind!r}: expected one of {', '.join(SOURCES)}")
    source = SOURCES[kind]
    return replace(source, url=url or source.url, sha256=(sha256 or source.sha256).lower())


# --- download ---------------------------------------------------------------------------------------------------


def download(
    url: str,
    target: Path,
    sha256: str,
    *,
    progress: bool = True,
    attempts: int = 3,
    timeout: float = 60.0,
    free_bytes_after: float = 0.0,
) -> Path:
    """Download `url` to `target` through `<target>.part`, resuming with HTTP Range; verify sha256; return target.

    A `.part` left by an interrupted run (or by a connection dropped mid-way, retried up to `attempts` times) is
    continued from its size. A server that ignores Range starts over. The sum is checked on the whole file; a
    mismatch deletes the `.part` and raises ChecksumError. `free_bytes_after`: extra disk space needed later
    (extraction), checked before the first byte. Raises OfflineError when the host cannot be reached.
    """
    target = Path(target)
    if target.is_file() and sha256_of(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, progress, timeout, free_bytes_after)
            break
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as error:
            host = urlsplit(url).hostname
            raise OfflineError(
                f"cannot reach {host} ({type(error).__name__}): downloading needs internet access "
                "(or --url pointing at a reachable mirror)"
            ) from error
        except httpx.TransportError as error:  # dropped mid-way: keep the .part, continue from its size
            if attempt == attempts:
                have = part.stat().st_size if part.is_file() else 0
                raise FetchError(
                    f"download of {url} interrupted after {have / 1e6:.1f} MB ({type(error).__name__}); "
                    "run the same command again to resume"
                ) from error
    digest = sha256_of(part)
    if digest != sha256:
        part.unlink()
        raise ChecksumError(
            f"{target.name}: sha256 {digest} does not match the published {sha256}; "
            "the download was deleted and nothing was extracted (run again to download afresh)"
        )
    part.replace(target)
    return target


def _transfer(url: str, part: Path, progress: bool, timeout: float, free_bytes_after: float) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
        if response.status_code == 416 and offset:  # nothing left to send: the .part is complete
            return
        if response.status_code == 200:
            offset = 0  # the server ignored Range: start over
        elif response.status_code != 206 or not response.headers.get("content-range", "").startswith(
            f"bytes {offset}-"
        ):
            raise FetchError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
        remaining = int(response.headers.get("content-length", 0))
        _check_disk(part.parent, remaining + (offset + remaining) * free_bytes_after)
        with (
            part.open("ab" if offset else "wb") as out,
            tqdm(
                total=offset + remaining or None,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            for block in response.iter_bytes():  # as received: a dropped line loses nothing already sent
                out.write(block)
                bar.update(len(block))


def _check_disk(folder: Path, needed: float) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FetchError(
            f"{folder} has {free / 1e9:.1f} GB free; this download and its extraction need ~{needed / 1e9:.1f} GB"
        )


# --- extraction -------------------------------------------------------------------------------------------------


def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse absolute paths, `..`, links that leave the archive's tree, devices and fifos (UnsafeArchiveError)."""

    def refuse(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive}: member {member.name!r} {why}; refused, nothing was extracted")

    if not _inside(member.name):
        raise refuse("would be written outside the dataset folder")
    if member.issym():
        if not _inside(posixpath.join(posixpath.dirname(member.name), member.linkname)):
            raise refuse(f"is a link to {member.linkname!r}, outside the dataset folder")
    elif member.islnk():
        if not _inside(member.linkname):
            raise refuse(f"is a hard link to {member.linkname!r}, outside the dataset folder")
    elif not (member.isfile() or member.isdir()):
        raise refuse("is a device, fifo or other special file")


def _inside(name: str) -> bool:
    """Whether a relative archive path stays inside the extraction folder (no absolute path, drive or `..`)."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return False
    normal = posixpath.normpath(name)
    return normal != ".." and not normal.startswith("../")


def safe_extract(archive: Path, dest: Path, progress: bool = True) -> None:
    """Extract a tar (any compression) into `dest`, checking every member first (see `check_member`).

    Members go to a staging folder beside `dest`'s contents and are moved in only when the whole archive
    extracted cleanly, so a refused or broken archive leaves `dest` as it was. tarfile's "data" filter
    (PEP 706) is applied on top, which also drops setuid bits and device files.
    """
    staging = dest / f".extracting-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with (
            tarfile.open(archive, "r:*") as tar,
            tqdm(desc=f"extracting {archive.name}", unit=" files", disable=not progress) as bar,
        ):
            for member in tar:
                check_member(member, archive.name)
                tar.extract(member, staging, filter="data")
                bar.update(1)
        for entry in sorted(staging.iterdir()):
            final = dest / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            entry.replace(final)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise FetchError(f"{archive.name} is not a readable tar archive ({error}); delete it and run again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unwrap(root: Path, kind: str) -> None:
    """Archives that wrap everything in one top folder: lift its contents to `root` (the loaders want them there)."""
    if _layout_ok(root, kind):
        return
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(folders) == 1 and _layout_ok(folders[0], kind):
        wrapper = folders[0]
        for entry in list(wrapper.iterdir()):
            entry.replace(root / entry.name)
        wrapper.rmdir()


def _layout_ok(folder: Path, kind: str) -> bool:
    if kind == "visa":
        return (folder / "split_csv" / "1cls.csv").is_file()
    return any((p / "train" / "good").is_dir() for p in folder.iterdir())


# --- the whole fetch --------------------------------------------------------------------------------------------


def fetch_dataset(
    kind: str,
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Path:
    """Make `root` a ready `kind:root` dataset: licence notice, download, verify, extract, check, stamp.

    Idempotent: a root stamped with the same sha256 that still opens is left alone. Returns `root`.
    Raises FetchError (OfflineError, ChecksumError, UnsafeArchiveError) with a one-line message.
    """
    source = source_for(kind, url, sha256)
    root = Path(root).expanduser()
    if _already_fetched(root, source):
        say(f"{source.title}: already at {root} (sha256 {source.sha256[:16]}…); nothing to do")
        return root
    say(source.licence_notice())
    root.mkdir(parents=True, exist_ok=True)
    archive = root / source.archive_name
    download(source.url, archive, source.sha256, progress=progress, free_bytes_after=EXTRACT_RATIO)
    say(f"{archive.name}: sha256 verified; extracting into {root}")
    safe_extract(archive, root, progress=progress)
    _unwrap(root, kind)
    categories = _open(root, source)
    (root / STAMP_NAME).write_text(
        json.dumps(
            {
                "kind": kind,
                "url": source.url,
                "sha256": source.sha256,
                "archive": archive.name,
                "categories": categories,
                "fetched": datetime.now(UTC).isoformat(),
            },
            indent=2,
        )
    )
    if not keep_archive:
        archive.unlink()
    if source.url == SOURCES[kind].url and len(categories) != source.categories:
        say(
            f"note: {source.title} is published with {source.categories} categories; this archive has {len(categories)}"
        )
    say(f"{source.title}: {len(categories)} categories ready as {kind}:{root}")
    return root


def _already_fetched(root: Path, source: DatasetSource) -> bool:
    stamp = root / STAMP_NAME
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
        _open(root, source)
    except (ValueError, FetchError):
        return False
    return recorded.get("sha256") == source.sha256


def _open(root: Path, source: DatasetSource) -> list[str]:
    try:
        return list(open_dataset(f"{source.kind}:{root}").categories)
    except DatasetError as error:
        raise FetchError(f"{source.title} extracted into {root} but does not open: {error}") from error

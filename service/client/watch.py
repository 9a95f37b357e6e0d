"""`watch DIR`: post every image that appears in a folder exactly once, and keep its result.

A frame is an image file identified by name, size and modification time. It is sent once the writer is done
with it: its size and mtime stayed the same for `settle_s` seconds (and on two scans at least), and a PNG, JPEG
or BMP file has its end marker or its declared size (else it waits up to `INCOMPLETE_GRACE_S` longer). Files
named as temporary (`.name`, `~name`, `name.part`, `name.tmp`, ...) are never frames: a writer that writes
under such a name and renames when done is never read early, whatever its pauses. Only suffixes the service
accepts are picked up (`service.imaging.formats`).

Its result files are written atomically, then the frame is recorded in the journal; a frame in the journal is
never sent again. After a crash, a frame whose result files are complete but not yet journaled is journaled
without sending it again; only a frame whose request was in flight when the client died is sent a second time
(it has no result yet: nothing lost).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.client.api import FrameError, InspectApi
from service.client.journal import Journal
from service.client.outputs import OutputFolder, safe_stem
from service.imaging.formats import BMP_START, JPEG_START, PNG_START, has_accepted_suffix

log = logging.getLogger(__name__)

DEFAULT_SETTLE_S = 2.0  # unchanged this long = the writer is done (a pause longer than this needs a temporary name)
INCOMPLETE_GRACE_S = 30.0  # a settled PNG/JPEG/BMP without its end waits this much longer, then is sent anyway
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".swp")
PNG_END, JPEG_END = b"IEND\xaeB`\x82", b"\xff\xd9"


@dataclass(frozen=True)
class Frame:
    """One image file as found: path, size (bytes) and mtime (ns); a rewritten file is a new frame."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """The frame's identity in the journal: "name|size|mtime_ns"."""
        return f"{self.path.name}|{self.size}|{self.mtime_ns}"

    def source(self) -> dict[str, object]:
        """The frame as recorded in its result files: file, key, size and mtime_ns."""
        return {"file": str(self.path), "key": self.key, "size": self.size, "mtime_ns": self.mtime_ns}

    def unchanged(self) -> bool:
        """Whether the file still has this frame's size and mtime (False once deleted)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


def is_temporary(name: str) -> bool:
    """A file a writer has not finished: hidden (`.name`), `~name`, or `name.part`, `name.tmp`, ... until renamed."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


def is_candidate(entry: os.DirEntry) -> bool:
    """Files with a suffix the service accepts, except temporary ones."""
    return not is_temporary(entry.name) and has_accepted_suffix(entry.name) and entry.is_file()


def looks_complete(path: Path, size: int) -> bool:
    """Whether the file's end is written: a PNG ends with IEND, a JPEG with EOI (padding aside), a BMP has the
    size its header declares. Other non-empty files count as complete (the service judges them); empty ones not."""
    if size == 0:
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            handle.seek(max(size - 64, 0))
            tail = handle.read(64)
    except OSError:
        return False
    if any(len(head) < len(start) and start.startswith(head) for start in (PNG_START, JPEG_START, BMP_START)):
        return False  # not even the whole signature yet
    if head.startswith(PNG_START):
        return tail.endswith(PNG_END)
    if head.startswith(JPEG_START):
        return tail.rstrip(b"\x00\xff\r\n").endswith(JPEG_END)
    if head.startswith(BMP_START):
        declared = int.from_bytes(head[2:6], "little")  # bfSize; 0 when the writer left it out
        return len(head) >= 6 and (declared == 0 or size >= declared)
    return True


@dataclass
class Sighting:
    """One file as the scanner last saw it."""

    signature: tuple[int, int]  # (size, mtime_ns)
    since: float  # clock time the file was first seen with this signature
    scan: int  # the scan that first saw it with this signature
    complete: bool | None = None  # looks_complete(), checked once the signature is stable


class FolderScanner:
    """Finds frames whose writer is done: the same size and mtime for `settle_s` (and on two scans or more), and,
    for PNG, JPEG and BMP, the file's end written (or `incomplete_grace_s` more without a change)."""

    def __init__(
        self,
        folder: Path,
        settle_s: float = DEFAULT_SETTLE_S,
        incomplete_grace_s: float = INCOMPLETE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.settle_s = settle_s
        self.incomplete_grace_s = incomplete_grace_s
        self.clock = clock
        self.seen: dict[str, Sighting] = {}
        self.unsettled = 0  # files seen on the last scan that were still changing, new, or incomplete
        self.scans = 0

    def settled_frames(self) -> list[Frame]:
        """Scan the folder once and return the frames whose writer is done, oldest mtime first; counts the rest in
        `unsettled`."""
        now, scan = self.clock(), self.scans
        current: dict[str, Sighting] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_candidate(entry):
                    stat = entry.stat()
                    signature = (stat.st_size, stat.st_mtime_ns)
                    previous = self.seen.get(entry.name)
                    same = previous is not None and previous.signature == signature
                    current[entry.name] = previous if same else Sighting(signature, now, scan)
        self.seen = current
        self.scans += 1
        settled = [
            Frame(self.folder / name, *sighting.signature)
            for name, sighting in current.items()
            if self.is_settled(name, sighting, now, scan)
        ]
        self.unsettled = len(current) - len(settled)
        return sorted(settled, key=lambda frame: (frame.mtime_ns, frame.path.name))

    def is_settled(self, name: str, sighting: Sighting, now: float, scan: int) -> bool:
        """Whether a file is settled: seen on an earlier scan, unchanged for `settle_s`, and complete
        (or past the extra grace)."""
        stable_s = now - sighting.since
        if sighting.scan == scan or stable_s < self.settle_s:
            return False
        if sighting.complete is None:
            sighting.complete = looks_complete(self.folder / name, sighting.signature[0])
            if not sighting.complete:
                log.info("%s: unchanged but its end is not written yet; waiting", name)
        if sighting.complete:
            return True
        return stable_s >= self.settle_s + self.incomplete_grace_s


class FrameSender:
    """Sends one frame and records it: result files first, then the journal."""

    def __init__(self, api: InspectApi, product_id: str, outputs: OutputFolder, journal: Journal) -> None:
        self.api = api
        self.product_id = product_id
        self.outputs = outputs
        self.journal = journal

    def output_stem(self, frame: Frame) -> str:
        """The file's stem, unless another frame's outputs already use it (a reused file name)."""
        stem = safe_stem(frame.path.name)
        owner = self.journal.stem_owner(stem) or self.outputs.recorded_source(stem)
        if owner is None or owner == frame.key:
            return stem
        return f"{stem}-{hashlib.sha1(frame.key.encode()).hexdigest()[:10]}"

    def send(self, frame: Frame) -> str:
        """Returns what happened: "done", "rejected", "recovered" (finished before a crash) or "changed"."""
        stem = self.output_stem(frame)
        if self.outputs.recorded_source(stem) == frame.key:  # outputs complete, journal entry lost in a crash
            status = "rejected" if (self.outputs.folder / f"{stem}.error.json").exists() else "done"
            self.journal.record(frame.key, str(frame.path), stem, status, "recovered after a restart")
            return "recovered"
        data = frame.path.read_bytes()
        if not frame.unchanged():  # rewritten while we read it: it will come back as a new frame
            return "changed"
        try:
            response = self.api.inspect(self.product_id, [(frame.path.name, data)])
        except FrameError as err:
            self.outputs.write_error(stem, frame.source(), str(err), err.status)
            self.journal.record(frame.key, str(frame.path), stem, "rejected", str(err))
            log.error("%s: rejected, not sent again: %s", frame.path.name, err)
            return "rejected"
        result = response["results"][0]
        self.outputs.write_result(stem, frame.source(), response, result)
        self.journal.record(frame.key, str(frame.path), stem, "done")
        verdict = "ANOMALOUS" if result.get("anomalous") else "good"
        log.info("%s: %s (score %.4g, threshold %.4g)", frame.path.name, verdict, result["score"], result["threshold"])
        return "done"


def watch_folder(
    sender: FrameSender,
    folder: Path,
    stop: threading.Event,
    poll_s: float = 0.5,
    once: bool = False,
    delete_sent: bool = False,
    settle_s: float = DEFAULT_SETTLE_S,
) -> dict[str, int]:
    """Send frames until `stop` is set (or, with `once`, until every file in `folder` is finished).

    Returns how many frames ended how: "done", "rejected", "recovered", "changed", "vanished"."""
    scanner = FolderScanner(folder, settle_s=settle_s)
    counts: dict[str, int] = {}
    while not stop.is_set():
        pending = [frame for frame in scanner.settled_frames() if not sender.journal.is_finished(frame.key)]
        for frame in pending:
            if stop.is_set():
                break
            try:
                outcome = sender.send(frame)
            except FileNotFoundError:
                outcome = "vanished"
                log.warning("%s: deleted before it could be sent", frame.path.name)
            counts[outcome] = counts.get(outcome, 0) + 1
            if delete_sent and outcome in ("done", "rejected", "recovered"):
                frame.path.unlink(missing_ok=True)
        if once and not pending and scanner.scans >= 2 and scanner.unsettled == 0:
            break
        stop.wait(poll_s)
    return counts

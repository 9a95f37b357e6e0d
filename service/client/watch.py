"""`watch DIR`: post every image that appears in a folder exactly once, and keep its result.

A frame is one state of an image file: its name, size, mtime, ctime and inode, and its content digest. A file
rewritten under the same name is a new frame, even at the same size and mtime: the rewrite changes its ctime
(or, renamed into place, its inode), and a file this run saw change is told by its content. A frame is sent
once the writer is done with it: its stat stayed the same for `settle_s` seconds (and on two scans at least),
and a PNG, JPEG or BMP file has its end marker or its declared size (else it waits up to `INCOMPLETE_GRACE_S`
longer). Files named as temporary (`.name`, `~name`, `name.part`, `name.tmp`, ...) are never frames: a writer
that writes under such a name and renames when done is never read early, whatever its pauses. Only suffixes the
service accepts are picked up (`service.imaging.formats`).

Its result files are written atomically, then the frame is recorded in the journal; a frame in the journal is
never sent again. After a crash, a frame whose result files are complete but not yet journaled is journaled
without sending it again; only a frame whose request was in flight when the client died is sent a second time
(it has no result yet: nothing lost). A frame that cannot be read or written is logged and skipped; the others
go on.
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
from service.client.names import display_name, safe_stem
from service.client.outputs import OutputFolder
from service.imaging.formats import BMP_START, JPEG_START, PNG_START, has_accepted_suffix
from station.camera import is_temporary

log = logging.getLogger(__name__)

DEFAULT_SETTLE_S = 2.0  # unchanged this long = the writer is done (a pause longer than this needs a temporary name)
INCOMPLETE_GRACE_S = 30.0  # a settled PNG/JPEG/BMP without its end waits this much longer, then is sent anyway
PNG_END, JPEG_END = b"IEND\xaeB`\x82", b"\xff\xd9"


@dataclass(frozen=True)
class Frame:
    """One image file as found: its path and stat (bytes, ns since the epoch); a rewritten file is a new frame."""

    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: int = 0
    recheck: bool = False  # this run saw the file change: compare its content with the journal's, not only its stat

    @property
    def name(self) -> str:
        """The file name as it appears in logs, the journal and JSON files (`names.display_name`)."""
        return display_name(self.path.name)

    @property
    def name_key(self) -> str:
        """The start of the key, `name|size|mtime_ns` (an older client's whole key)."""
        return f"{self.name}|{self.size}|{self.mtime_ns}"

    @property
    def stat_key(self) -> str:
        """The key without the content digest: `name|size|mtime_ns|ctime_ns|inode`."""
        return f"{self.name_key}|{self.ctime_ns}|{self.inode}"

    def key(self, digest: str) -> str:
        """The frame's identity in the journal and its result files: the stat key and the content digest."""
        return f"{self.stat_key}|{digest}"

    def read(self) -> tuple[bytes, str]:
        """The file's bytes and their digest (32 hex digits); raises OSError as reading does."""
        data = self.path.read_bytes()
        return data, hashlib.blake2b(data, digest_size=16).hexdigest()

    def source(self, digest: str) -> dict[str, object]:
        """The frame as recorded in its result files: file, key, size, mtime_ns, ctime_ns, inode and digest."""
        return {
            "file": display_name(str(self.path)),
            "key": self.key(digest),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "digest": digest,
        }

    def unchanged(self) -> bool:
        """Whether the file still has this frame's size, mtime, ctime and inode (False once deleted)."""
        try:
            return signature(self.path.stat()) == (self.size, self.mtime_ns, self.ctime_ns, self.inode)
        except FileNotFoundError:
            return False


def signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one state of a file from the next without reading it: (size, mtime_ns, ctime_ns, inode). A
    rewrite changes the ctime (even when the writer resets the mtime), a rename into place the inode."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def is_frame_name(name: str) -> bool:
    """Whether a file of this name is a frame to the watcher: a suffix the service accepts, not temporary."""
    return not is_temporary(name) and has_accepted_suffix(name)


def is_candidate(entry: os.DirEntry) -> bool:
    """Files with a suffix the service accepts, except temporary ones."""
    return is_frame_name(entry.name) and entry.is_file()


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

    signature: tuple[int, int, int, int]  # (size, mtime_ns, ctime_ns, inode)
    since: float  # clock time the file was first seen with this signature
    scan: int  # the scan that first saw it with this signature
    recheck: bool = False  # seen before with another signature: its content may match an older frame's stat
    complete: bool | None = None  # looks_complete(), checked once the signature is stable
    reported: bool = False  # returned as a settled frame already


class FolderScanner:
    """Finds frames whose writer is done: the same size, mtime, ctime and inode for `settle_s` (and on two scans or
    more), and, for PNG, JPEG and BMP, the file's end written (or `incomplete_grace_s` more without a change)."""

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
        """Scan the folder once and return the files that settled since the last scan, oldest mtime first: each state
        of a file once (a file that changes comes back as a new frame). Counts the others in `unsettled`."""
        now, scan = self.clock(), self.scans
        current: dict[str, Sighting] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_candidate(entry):
                    state = signature(entry.stat())
                    previous = self.seen.get(entry.name)
                    if previous is not None and previous.signature == state:
                        current[entry.name] = previous
                    else:
                        current[entry.name] = Sighting(state, now, scan, recheck=previous is not None)
        self.seen = current
        self.scans += 1
        settled = []
        for name, sighting in current.items():
            if not sighting.reported and self.is_settled(name, sighting, now, scan):
                sighting.reported = True
                settled.append(Frame(self.folder / name, *sighting.signature, recheck=sighting.recheck))
        self.unsettled = sum(not sighting.reported for sighting in current.values())
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
                log.info("%s: unchanged but its end is not written yet; waiting", display_name(name))
        if sighting.complete:
            return True
        return stable_s >= self.settle_s + self.incomplete_grace_s


@dataclass(frozen=True)
class Sent:
    """What became of a frame given to `FrameSender.send`."""

    outcome: str  # "done", "rejected", "recovered" (finished before a crash) or "changed" (rewritten while read)
    has_result: bool = False  # a result (not a rejection) is stored: only then may the image be deleted


class FrameSender:
    """Sends one frame and records it: result files first, then the journal."""

    def __init__(self, api: InspectApi, product_id: str, outputs: OutputFolder, journal: Journal) -> None:
        self.api = api
        self.product_id = product_id
        self.outputs = outputs
        self.journal = journal

    def finished_status(self, frame: Frame) -> str | None:
        """The journal's status of this frame ("done" or "rejected"), None for a new one. Reads the file only when
        the journal holds another state of a file with this name, size and mtime, or this run saw it change."""
        if not frame.recheck:
            known = set(self.journal.statuses_under(frame.stat_key).values())
            if len(known) == 1:
                return known.pop()
            legacy = self.journal.legacy_status(frame.name_key, frame.ctime_ns)
            if legacy is not None:
                return legacy
        states = self.journal.statuses_under(frame.name_key)
        if not states:
            return None
        _, digest = frame.read()
        return next((status for key, status in states.items() if key.endswith(f"|{digest}")), None)

    def output_stem(self, frame: Frame, key: str) -> str:
        """The file's safe stem, unless another frame's outputs already use it (a reused file name, `a.png` and
        `a.jpg`, or names that differ in case only on a case-insensitive disk)."""
        stem = safe_stem(frame.path.name)
        owner = self.journal.stem_owner(stem) or self.outputs.recorded_source(stem)
        if owner is None or owner == key:
            return stem
        return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"

    def send(self, frame: Frame) -> Sent:
        """Send the frame and record its result or rejection; raises OSError when its file cannot be read or its
        results cannot be written, ApiError when the service cannot be used at all."""
        data, digest = frame.read()
        if not frame.unchanged():  # rewritten while we read it: it will come back as a new frame
            return Sent("changed")
        key, source = frame.key(digest), frame.source(digest)
        stem = self.output_stem(frame, key)
        if self.outputs.recorded_source(stem) == key:  # outputs complete, journal entry lost in a crash
            status = "rejected" if (self.outputs.folder / f"{stem}.error.json").exists() else "done"
            self.journal.record(key, source["file"], stem, status, "recovered after a restart")
            return Sent("recovered", has_result=status == "done")
        try:
            response = self.api.inspect(self.product_id, [(frame.path.name, data)])
        except FrameError as err:
            self.outputs.write_error(stem, source, str(err), err.status)
            self.journal.record(key, source["file"], stem, "rejected", str(err))
            log.error("%s: rejected, not sent again: %s", frame.name, err)
            return Sent("rejected")
        result = response["results"][0]
        self.outputs.write_result(stem, source, response, result)
        self.journal.record(key, source["file"], stem, "done")
        verdict = "ANOMALOUS" if result.get("anomalous") else "good"
        log.info("%s: %s (score %.4g, threshold %.4g)", frame.name, verdict, result["score"], result["threshold"])
        return Sent("done", has_result=True)


def delete_unchanged(frame: Frame) -> None:
    """Delete the frame's image unless the file changed since it was read (a new frame under the same name)."""
    if not frame.unchanged():
        log.warning("%s: changed since it was sent; not deleted", frame.name)
        return
    try:
        frame.path.unlink(missing_ok=True)
    except OSError as err:
        log.warning("%s: cannot delete it: %s", frame.name, err.strerror or err)


def handle(sender: FrameSender, frame: Frame, delete_sent: bool) -> str | None:
    """Send a frame unless it is finished; with `delete_sent`, delete its image once a result is stored (never a
    rejected one). Returns the outcome ("done", "rejected", "recovered", "changed", "vanished" or "failed"), None
    for a frame finished before. A frame whose file cannot be read or whose results cannot be written is logged
    and left for the next change of its file or the next start ("failed"): the other frames go on."""
    try:
        status = sender.finished_status(frame)
        if status is not None:
            if delete_sent and status == "done":
                delete_unchanged(frame)
            return None
        sent = sender.send(frame)
    except FileNotFoundError:
        log.warning("%s: deleted before it could be sent", frame.name)
        return "vanished"
    except (OSError, UnicodeError) as err:
        log.error("%s: not sent (tried again when it changes or at the next start): %s", frame.name, err)
        return "failed"
    if delete_sent and sent.has_result:
        delete_unchanged(frame)
    return sent.outcome


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

    Returns how many frames ended how: "done", "rejected", "recovered", "changed", "vanished", "failed"."""
    scanner = FolderScanner(folder, settle_s=settle_s)
    counts: dict[str, int] = {}
    while not stop.is_set():
        handled = 0
        for frame in scanner.settled_frames():
            if stop.is_set():
                break
            outcome = handle(sender, frame, delete_sent)
            if outcome is not None:
                counts[outcome] = counts.get(outcome, 0) + 1
                handled += 1
        if once and not handled and scanner.scans >= 2 and scanner.unsettled == 0:
            break
        stop.wait(poll_s)
    return counts

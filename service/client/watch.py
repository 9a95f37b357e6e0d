"""`watch DIR`: post every image that appears in a folder exactly once, and keep its result.

A frame is an image file identified by name, size and modification time. It is sent once its size and
mtime are the same on two scans (the camera finished writing it). Its result files are written atomically,
then the frame is recorded in the journal; a frame in the journal is never sent again. After a crash, a frame
whose result files are complete but not yet journaled is journaled without sending it again; only a frame
whose request was in flight when the client died is sent a second time (it has no result yet: nothing lost).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from service.client.api import FrameError, InspectApi
from service.client.journal import Journal
from service.client.outputs import OutputFolder, safe_stem

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Frame:
    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return f"{self.path.name}|{self.size}|{self.mtime_ns}"

    def source(self) -> dict[str, object]:
        return {"file": str(self.path), "key": self.key, "size": self.size, "mtime_ns": self.mtime_ns}

    def unchanged(self) -> bool:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


def is_candidate(entry: os.DirEntry) -> bool:
    """Image files only; hidden files (temporary files of atomic writers) are not frames yet."""
    name = entry.name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file()


class FolderScanner:
    """Finds frames that stopped changing: same size and mtime on two consecutive scans."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.previous: dict[str, tuple[int, int]] = {}
        self.unsettled = 0  # files seen on the last scan that were still changing or new
        self.scans = 0

    def settled_frames(self) -> list[Frame]:
        current: dict[str, tuple[int, int]] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_candidate(entry):
                    stat = entry.stat()
                    current[entry.name] = (stat.st_size, stat.st_mtime_ns)
        settled = [
            Frame(self.folder / name, *signature)
            for name, signature in current.items()
            if self.previous.get(name) == signature
        ]
        self.unsettled = len(current) - len(settled)
        self.previous = current
        self.scans += 1
        return sorted(settled, key=lambda frame: (frame.mtime_ns, frame.path.name))


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
) -> dict[str, int]:
    """Send frames until `stop` is set (or, with `once`, until every file in `folder` is finished)."""
    scanner = FolderScanner(folder)
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

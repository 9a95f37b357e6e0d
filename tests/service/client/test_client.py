"""The camera client's retry, journal and output logic against a scripted fake service (httpx.MockTransport),
and its OpenCV capture against a real video file."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.client import cli
from service.client.api import ConfigurationError, FrameError, InspectApi, RetriesExhausted, RetryPolicy, Stopped
from service.client.camera import OPENCV_MISSING, CameraSpooler, CameraUnavailable
from service.client.journal import Journal
from service.client.names import display_name, safe_stem, upload_name
from service.client.outputs import OutputFolder
from service.client.watch import FolderScanner, Frame, FrameSender, looks_complete, signature, watch_folder
from service.imaging.formats import ACCEPTED_FORMATS, ACCEPTED_SUFFIXES
from tests.helpers.camera import start_pausing_writer

FAST = RetryPolicy(initial_s=0.001, max_s=0.01)
MASK = b"mask-png-bytes"


def png(width: int = 8, height: int = 6, shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def uploaded_files(request: httpx.Request) -> list[tuple[str, bytes]]:
    """(file name, content) of every file in a multipart request."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    files = []
    for part in request.read().split(b"--" + boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        if name := re.search(rb'filename="([^"]+)"', head):
            files.append((name.group(1).decode(), body[:-2]))  # without the CRLF before the next boundary
    return files


def decode_error(data: bytes) -> int | None:
    """What the service answers for one file: None if it decodes, else 415 (not an image) or 400 (broken)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.UnidentifiedImageError:
        return 415
    except (OSError, SyntaxError, ValueError):
        return 400
    return None


class FakeService:
    """Answers POST /inspect like the service; `script` gives status codes (or exceptions) for the first calls.
    With `decode`, a request with a file that does not decode is refused whole, as the service does (400/415)."""

    def __init__(
        self,
        script: list[int | BaseException] | None = None,
        headers: dict[str, str] | None = None,
        decode: bool = False,
    ) -> None:
        self.script = list(script or [])
        self.headers = headers or {}
        self.decode = decode
        self.requests: list[httpx.Request] = []
        self.sent_files: list[str] = []
        self.sent_sizes: list[int] = []
        self.sent_data: list[bytes] = []
        self.while_in_flight: Callable[[], None] | None = None  # runs during each request, as a camera would

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.while_in_flight:
            self.while_in_flight()
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, BaseException):
            raise step
        if step != 200:
            return httpx.Response(step, json={"detail": f"scripted {step}"}, headers=self.headers)
        uploads = uploaded_files(request)
        for name, data in uploads if self.decode else ():
            if status := decode_error(data):
                return httpx.Response(status, json={"detail": f"images ({name}): does not decode"})
        self.sent_files += [name for name, _ in uploads]
        self.sent_sizes += [len(data) for _, data in uploads]
        self.sent_data += [data for _, data in uploads]
        results = [
            {
                "filename": name,
                "score": 0.25,
                "anomalous": False,
                "threshold": 0.5,
                "mask_png": base64.b64encode(MASK).decode(),
                "anomaly_map_png": base64.b64encode(b"map").decode(),
                "mode": "training-free",
            }
            for name, _ in uploads
        ]
        return httpx.Response(200, json={"product_id": "p1", "reference_version": 3, "results": results})


def api_for(fake: FakeService, retry: RetryPolicy = FAST, **kwargs) -> InspectApi:
    return InspectApi("http://service", retry=retry, transport=httpx.MockTransport(fake), **kwargs)


# --- retries -------------------------------------------------------------------------------------------------


def test_busy_and_down_service_is_retried_until_it_answers():
    fake = FakeService([429, httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow"), 502])
    answer = api_for(fake).inspect("p1", [("a.png", png())])
    assert answer["results"][0]["filename"] == "a.png"
    assert len(fake.requests) == 6


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_bad_image_is_not_retried(status: int):
    fake = FakeService([status])
    with pytest.raises(FrameError, match=f"HTTP {status}: scripted {status}"):
        api_for(fake).inspect("p1", [("a.png", png())])
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_misconfiguration_is_not_retried(status: int):
    fake = FakeService([status])
    with pytest.raises(ConfigurationError) as raised:
        api_for(fake).inspect("p1", [("a.png", png())])
    assert raised.value.status == status and len(fake.requests) == 1


def test_server_errors_are_retried_a_few_times_then_blamed_on_the_frame():
    fake = FakeService([500, 500, 500, 500])
    with pytest.raises(FrameError, match="HTTP 500"):
        api_for(fake, RetryPolicy(initial_s=0.001, max_s=0.01, server_error_attempts=3)).inspect("p1", [("a", b"")])
    assert len(fake.requests) == 3


@pytest.mark.parametrize(("max_attempts", "told"), [(4, "gave up after 4 attempts;"), (1, "gave up after 1 attempt;")])
def test_max_attempts_bounds_the_retries(max_attempts, told):
    fake = FakeService([503] * 10)
    with pytest.raises(RetriesExhausted, match=told):
        api_for(fake, RetryPolicy(initial_s=0.001, max_s=0.01, max_attempts=max_attempts)).inspect("p1", [("a", b"")])
    assert len(fake.requests) == max_attempts


@pytest.mark.parametrize(
    ("environment", "shown"),
    [
        ({}, "(default: http://127.0.0.1:8000;"),
        ({"DCPSFR_CLIENT_URL": "http://line-3:9000"}, "(default: http://line-3:9000;"),
    ],
)
def test_the_url_help_shows_its_default(monkeypatch, capsys, environment, shown):
    monkeypatch.delenv("DCPSFR_CLIENT_URL", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--help"])
    told = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert shown in told and "DCPSFR_CLIENT_URL sets it" in told


def test_stop_interrupts_the_backoff():
    stop = threading.Event()
    stop.set()
    fake = FakeService([503], headers={"Retry-After": "3600"})
    with pytest.raises(Stopped):
        api_for(fake, RetryPolicy(max_s=3600), stop=stop).inspect("p1", [("a", b"")])


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(initial_s=1.0, max_s=8.0, factor=2.0)
    for attempt, ceiling in ((0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0)):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1
    assert policy.delay(0, retry_after_s=5.0) == 5.0
    assert policy.delay(0, retry_after_s=600.0) == 8.0


def test_api_key_is_sent_as_bearer_and_files_as_multipart():
    fake = FakeService()
    api_for(fake, api_key="k-123").inspect("p1", [("a.png", png()), ("b.jpg", b"jpeg")])
    request = fake.requests[0]
    assert request.headers["authorization"] == "Bearer k-123"
    body = request.read()
    assert b'name="product_id"' in body and b"Content-Type: image/jpeg" in body
    assert fake.sent_files == ["a.png", "b.jpg"]


def test_file_names_that_are_not_plain_text_are_sent_under_safe_names():
    """httpx cannot encode b'caf\\xe9.png' (a UnicodeEncodeError for every upload of it); a control character
    would reach the service's logs and records as it is."""
    fake = FakeService()
    images = [(os.fsdecode(b"caf\xe9.png"), png()), ("line\nbreak.JPG", png()), ("瓶.png", png())]
    api = api_for(fake)
    api.inspect("p1", images)
    api.upload_references("p1", images)
    expected = [f"caf-{name_digest(images[0][0])}.png", f"line_break-{name_digest(images[1][0])}.jpg", "瓶.png"]
    assert fake.sent_files == expected * 2
    assert b"Content-Type: image/jpeg" in fake.requests[0].read()


# --- watch: once per frame, across restarts ----------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    frames, out = tmp_path / "frames", tmp_path / "out"
    frames.mkdir()
    return frames, out


def add_frames(folder: Path, count: int, start: int = 0) -> list[Path]:
    paths = []
    for i in range(start, start + count):
        path = folder / f"frame{i:03d}.png"
        path.write_bytes(png(shade=i))
        os.utime(path, ns=(10**18 + i, 10**18 + i))  # distinct mtimes, in order
        paths.append(path)
    return paths


def run_watch(fake: FakeService, frames: Path, out: Path, **kwargs) -> dict[str, int]:
    """One client run (fresh objects, as after a restart) over what is in `frames` now (no settle time)."""
    journal = Journal(out / "journal.sqlite3")
    kwargs = {"poll_s": 0.01, "once": True, "settle_s": 0.0, **kwargs}
    try:
        sender = FrameSender(api_for(fake), "p1", OutputFolder(out), journal)
        return watch_folder(sender, frames, threading.Event(), **kwargs)
    finally:
        journal.close()


def result_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.json"))


def test_every_frame_is_sent_once_with_its_result_and_mask(folders):
    frames, out = folders
    add_frames(frames, 3)
    (frames / "notes.txt").write_text("not an image")
    (frames / ".frame999.png.tmp").write_bytes(png())  # an atomic writer's temporary file
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 3}
    assert fake.sent_files == ["frame000.png", "frame001.png", "frame002.png"]
    assert result_files(out) == ["frame000.json", "frame001.json", "frame002.json"]
    record = json.loads((out / "frame001.json").read_text())
    assert record["result"]["score"] == 0.25 and "mask_png" not in record["result"]
    assert record["source"]["key"].startswith("frame001.png|")
    assert (out / record["mask_png"]).read_bytes() == MASK
    assert not list(out.glob("*.map.png")), "heat maps are only saved with save_map"

    assert run_watch(fake, frames, out) == {}, "a restarted client sent finished frames again"
    add_frames(frames, 1, start=3)
    assert run_watch(fake, frames, out) == {"done": 1}
    assert fake.sent_files[-1] == "frame003.png" and len(fake.sent_files) == 4


def test_a_frame_is_sent_only_once_it_stops_changing(folders):
    frames, _ = folders
    scanner = FolderScanner(frames, settle_s=0.0)
    [path] = add_frames(frames, 1)
    assert scanner.settled_frames() == [] and scanner.unsettled == 1
    path.write_bytes(png(width=9))  # still being written
    assert scanner.settled_frames() == []
    [frame] = scanner.settled_frames()
    assert frame.path == path and scanner.unsettled == 0


def failing_once(original: Callable, error: Exception) -> Callable:
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return original(*args, **kwargs)

    return wrapper


def test_crash_after_the_result_is_written_does_not_resend(folders, monkeypatch):
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService()
    monkeypatch.setattr(Journal, "record", failing_once(Journal.record, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # the client dies between writing frame000.json and journaling it
        run_watch(fake, frames, out)
    assert fake.sent_files == ["frame000.png"] and result_files(out) == ["frame000.json"]
    assert run_watch(fake, frames, out) == {"recovered": 1, "done": 1}
    assert fake.sent_files == ["frame000.png", "frame001.png"], "frame000 was sent twice"
    journal = Journal(out / "journal.sqlite3")
    assert journal.counts() == {"done": 2}
    journal.close()


def test_crash_while_the_request_is_in_flight_sends_it_again(folders):
    frames, out = folders
    add_frames(frames, 1)
    fake = FakeService([KeyboardInterrupt()])  # the client dies before any answer arrives
    with pytest.raises(KeyboardInterrupt):
        run_watch(fake, frames, out)
    assert result_files(out) == []
    assert run_watch(fake, frames, out) == {"done": 1}
    assert result_files(out) == ["frame000.json"]


def test_a_rejected_frame_is_recorded_and_not_sent_again(folders):
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService([415])
    assert run_watch(fake, frames, out) == {"rejected": 1, "done": 1}
    error = json.loads((out / "frame000.error.json").read_text())
    assert error["status"] == 415 and "scripted 415" in error["error"]
    assert run_watch(fake, frames, out) == {}
    assert len(fake.requests) == 2


def test_a_reused_file_name_keeps_both_results(folders):
    frames, out = folders
    [path] = add_frames(frames, 1)
    fake = FakeService()
    run_watch(fake, frames, out)
    path.write_bytes(png(width=20))  # the camera reuses the name for a new frame
    os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    assert run_watch(fake, frames, out) == {"done": 1}
    [renamed] = set(result_files(out)) - {"frame000.json"}
    assert re.fullmatch(r"frame000-[0-9a-f]{10}\.json", renamed)
    assert json.loads((out / renamed).read_text())["source"]["size"] == path.stat().st_size


def test_delete_sent_removes_only_finished_images(folders):
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService([httpx.ConnectError("down")])
    run_watch(fake, frames, out, delete_sent=True)
    assert list(frames.iterdir()) == [] and len(result_files(out)) == 2


@pytest.mark.parametrize("status", [415, 422])
def test_delete_sent_keeps_a_rejected_image(folders, status):
    """A rejected image was deleted with the others: its only copy, lost. Only images with a stored result go."""
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService([status])
    assert run_watch(fake, frames, out, delete_sent=True) == {"rejected": 1, "done": 1}
    assert [path.name for path in frames.iterdir()] == ["frame000.png"]
    assert (out / "frame000.error.json").exists() and result_files(out) == ["frame000.error.json", "frame001.json"]
    assert run_watch(fake, frames, out, delete_sent=True) == {} and len(fake.requests) == 2
    assert [path.name for path in frames.iterdir()] == ["frame000.png"], "kept, and not sent again"


def test_delete_sent_keeps_an_image_rejected_just_before_a_crash(folders, monkeypatch):
    """Recovered after a restart (its error file written, its journal entry not), it is still a rejected frame."""
    frames, out = folders
    add_frames(frames, 1)
    fake = FakeService([422])
    monkeypatch.setattr(Journal, "record", failing_once(Journal.record, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_watch(fake, frames, out, delete_sent=True)
    assert run_watch(fake, frames, out, delete_sent=True) == {"recovered": 1}
    assert [path.name for path in frames.iterdir()] == ["frame000.png"] and len(fake.requests) == 1


def test_delete_sent_keeps_an_image_rewritten_while_its_request_was_in_flight(folders):
    """The file under the name is a new frame by the time the answer comes: it is sent next, then deleted."""
    frames, out = folders
    [path] = add_frames(frames, 1)
    first = path.read_bytes()
    fake = FakeService()
    fake.while_in_flight = lambda: (path.write_bytes(png(width=12)), setattr(fake, "while_in_flight", None))
    assert run_watch(fake, frames, out, delete_sent=True) == {"done": 2}
    assert fake.sent_data == [first, png(width=12)] and list(frames.iterdir()) == []


def test_delete_sent_deletes_a_frame_finished_by_an_earlier_run(folders):
    """Finished without --delete-sent (or stopped between its journal entry and the deletion): deleted when seen."""
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 2}
    assert run_watch(fake, frames, out, delete_sent=True) == {}
    assert list(frames.iterdir()) == [] and len(fake.requests) == 2


# --- watch: a file rewritten under the same name is a new frame ----------------------------------------------


def bmp(shade: int) -> bytes:
    """An uncompressed image: every shade gives a file of the same size."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (shade, 0, 0)).save(buffer, format="BMP")
    return buffer.getvalue()


def rewrite(path: Path, data: bytes, mtime_ns: int, renamed: bool) -> None:
    """A camera writing a new frame under a fixed name with the mtime the old one had (a timestamp-preserving copy,
    or a clock that did not tick): in place, or as a temporary file renamed over it."""
    target = path.with_name(path.name + ".part") if renamed else path
    target.write_bytes(data)
    os.utime(target, ns=(mtime_ns, mtime_ns))
    if renamed:
        os.replace(target, path)


@pytest.mark.parametrize("renamed", [False, True], ids=["in-place", "renamed-into-place"])
def test_a_file_rewritten_at_the_same_size_and_mtime_is_sent_again(folders, renamed):
    """Frames 2 and 3 had the first one's name, size and mtime: they were taken for it, never sent, never logged."""
    frames, out = folders
    path = frames / "frame.bmp"
    rewrite(path, bmp(1), 10**18, renamed=False)
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 1}
    for shade in (2, 3):
        rewrite(path, bmp(shade), 10**18, renamed)
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (len(bmp(1)), 10**18)
        assert run_watch(fake, frames, out) == {"done": 1}, f"frame {shade} was not sent"
    assert fake.sent_data == [bmp(1), bmp(2), bmp(3)]
    records = [json.loads((out / name).read_text()) for name in result_files(out)]
    assert sorted(record["source"]["size"] for record in records) == [len(bmp(1))] * 3
    assert len({record["source"]["digest"] for record in records}) == 3


def test_a_file_seen_changing_is_told_by_its_content_when_its_stat_comes_back_the_same(folders):
    """A coarse clock can give a rewrite the very size, mtime, ctime and inode of the frame before: once the scanner
    saw the file change, its content decides."""
    frames, out = folders
    [path] = add_frames(frames, 1)
    fake = FakeService()
    run_watch(fake, frames, out)
    journal = Journal(out / "journal.sqlite3")
    sender = FrameSender(api_for(fake), "p1", OutputFolder(out), journal)
    try:
        stat_before = signature(path.stat())
        assert sender.finished_status(Frame(path, *stat_before, recheck=True)) == "done"
        assert sender.finished_status(Frame(path, *stat_before)) == "done"
        with path.open("r+b") as handle:  # new content, stat put back as it was
            handle.seek(-20, os.SEEK_END)
            handle.write(b"\0" * 8)
        os.utime(path, ns=(stat_before[1], stat_before[1]))
        assert sender.finished_status(Frame(path, *stat_before, recheck=True)) is None
    finally:
        journal.close()


@pytest.mark.parametrize("change", ["chmod", "same bytes renamed into place"])
def test_a_file_whose_stat_changes_but_not_its_content_is_not_sent_again(folders, change):
    """A chmod changes the ctime, a copy renamed into place (or a share mounted again) the inode: same frame."""
    frames, out = folders
    [path] = add_frames(frames, 1)
    fake = FakeService()
    run_watch(fake, frames, out)
    stat = path.stat()
    if change == "chmod":
        os.chmod(path, 0o600)
    else:
        rewrite(path, path.read_bytes(), stat.st_mtime_ns, renamed=True)
    assert signature(path.stat()) != signature(stat)
    assert run_watch(fake, frames, out) == {} and len(fake.requests) == 1


def test_a_journal_of_an_older_client_counts_for_files_unchanged_since(folders):
    """Its keys are name|size|mtime: a file not changed since its entry is finished; one rewritten since is new."""
    frames, out = folders
    add_frames(frames, 2)
    journal = Journal(out / "journal.sqlite3")
    for path, finished in (
        (frames / "frame000.png", datetime.now(UTC)),
        (frames / "frame001.png", datetime(2001, 1, 1, tzinfo=UTC)),
    ):
        key = f"{path.name}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
        journal.db.execute(
            "INSERT INTO frames VALUES (?, ?, ?, 'done', NULL, ?)", (key, str(path), path.stem, finished.isoformat())
        )
    journal.close()
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 1}
    assert fake.sent_files == ["frame001.png"]


# --- names the client cannot use as they are -----------------------------------------------------------------


def odd_file(folder: Path, raw_name: bytes, data: bytes) -> Path:
    """A file whose name is these bytes (not necessarily UTF-8), as a camera or an SMB share may create it."""
    with open(os.path.join(os.fsencode(folder), raw_name), "wb") as handle:
        handle.write(data)
    return folder / os.fsdecode(raw_name)


@pytest.mark.parametrize(
    "raw_name",
    [b"caf\xe9.png", b"line\nbreak.png", b"\x1b[31mred.png", b"x" * 246 + b".png"],
    ids=["latin-1", "newline", "terminal-escape", "246-bytes"],
)
def test_a_name_the_client_cannot_use_as_it_is_is_sent_under_a_safe_name(folders, caplog, raw_name):
    """b'caf\\xe9.png' crashed `watch` (UnicodeEncodeError, exit 1) on every start, so no frame after it was ever
    inspected; a name too long for its output files crashed it the same way."""
    frames, out = folders
    add_frames(frames, 2)
    odd = odd_file(frames, raw_name, png(shade=9))
    fake = FakeService()
    caplog.set_level(logging.INFO, logger="service.client")
    assert run_watch(fake, frames, out) == {"done": 3}
    upload, stem = upload_name(odd.name), safe_stem(odd.name)
    assert sorted(fake.sent_files) == sorted(["frame000.png", "frame001.png", upload])
    assert upload.isprintable() and upload.encode("utf-8") and "\\" not in upload
    assert stem.isascii() and len(stem) <= 111 and (out / f"{stem}.mask.png").exists()
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["source"]["file"] == display_name(str(odd)) and record["source"]["file"].isprintable()
    assert record["source"]["key"].startswith(display_name(odd.name) + "|")
    assert any(display_name(odd.name) in message for message in caplog.messages)
    assert all(message.isprintable() for message in caplog.messages)
    assert run_watch(fake, frames, out) == {}, "a restart sent it again (or crashed on it)"
    assert odd.exists()


def test_a_latin1_name_keeps_its_bytes_in_the_json_and_its_identity_in_the_stem(folders):
    frames, out = folders
    odd = odd_file(frames, b"caf\xe9.png", png())
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 1}
    digest = hashlib.sha256(b"caf\xe9.png").hexdigest()[:10]
    assert fake.sent_files == [f"caf-{digest}.png"] and result_files(out) == [f"caf-{digest}.json"]
    assert json.loads((out / f"caf-{digest}.json").read_text())["source"]["file"] == str(frames / "caf\\xe9.png")
    assert odd.name == "caf\udce9.png"


def test_a_frame_that_cannot_be_read_is_logged_and_the_others_go_on(folders, monkeypatch, caplog):
    frames, out = folders
    add_frames(frames, 3)
    original = Frame.read

    def read(frame: Frame) -> tuple[bytes, str]:
        if frame.path.name == "frame001.png":
            raise PermissionError(13, "Permission denied", str(frame.path))
        return original(frame)

    monkeypatch.setattr(Frame, "read", read)
    assert run_watch(FakeService(), frames, out) == {"done": 2, "failed": 1}
    assert result_files(out) == ["frame000.json", "frame002.json"]
    assert any("frame001.png: not sent" in message and "Permission denied" in message for message in caplog.messages)
    monkeypatch.setattr(Frame, "read", original)
    assert run_watch(FakeService(), frames, out) == {"done": 1}, "tried again at the next start"


def test_inspect_sends_files_with_odd_names_under_safe_names(tmp_path: Path, monkeypatch, capsys):
    files = [odd_file(tmp_path, b"caf\xe9.png", png()), odd_file(tmp_path, b"tab\there.png", png(shade=1))]
    fake = FakeService()
    fake_client(monkeypatch, fake)
    out = tmp_path / "out"
    assert cli.main(["--url", "http://service", "inspect", "--product", "p1", "--out", str(out), *map(str, files)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(tmp_path / "caf\\xe9.png"), str(tmp_path / "tab\\there.png")]
    assert fake.sent_files == [upload_name(path.name) for path in files]
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{safe_stem(path.name)}.json" for path in files)


# --- output stems: one per frame, never shared ---------------------------------------------------------------


def name_digest(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:10]


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("frame.png", "frame"),
        ("Cam-1_2024.06.01.tif", "Cam-1_2024.06.01"),
        ("瓶.png", f"frame-{name_digest('瓶.png')}"),
        ("café.png", f"caf-{name_digest('café.png')}"),
        ("a b.png", f"a_b-{name_digest('a b.png')}"),
        ("_a.png", f"a-{name_digest('_a.png')}"),
        ("CON.png", f"CON-{name_digest('CON.png')}"),
        ("x" * 120 + ".png", "x" * 100 + "-" + name_digest("x" * 120 + ".png")),
    ],
)
def test_a_safe_stem_keeps_plain_names_and_marks_any_change_with_the_names_hash(name, stem):
    assert safe_stem(name) == stem


def test_names_that_lost_characters_to_the_same_stem_get_different_stems():
    """瓶.png became frame.json, the very stem of frame.png."""
    names = ["瓶.png", "碗.png", "frame.png", "_frame.png", "frame_.png", "café.png", "cafe.png", "caf.png"]
    names.append(os.fsdecode(b"caf\xe9.png"))
    assert len({safe_stem(name) for name in names}) == len(names)


@pytest.mark.parametrize("odd", ["瓶.png", "frame_.png"])
def test_a_frame_whose_name_lost_characters_does_not_take_a_plain_names_outputs(folders, odd):
    """`瓶.png` (sent first) got frame.json, and the real frame.png then got frame-3.json."""
    frames, out = folders
    for i, name in enumerate((odd, "frame.png")):
        (frames / name).write_bytes(png(shade=i))
        os.utime(frames / name, ns=(10**18 + i, 10**18 + i))
    assert run_watch(FakeService(), frames, out) == {"done": 2}
    assert result_files(out) == sorted(["frame.json", f"{safe_stem(odd)}.json"])
    for name in (odd, "frame.png"):
        assert json.loads((out / f"{safe_stem(name)}.json").read_text())["source"]["file"] == str(frames / name)


# --- camera --------------------------------------------------------------------------------------------------


def test_camera_without_opencv_says_how_to_install_it(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(CameraUnavailable, match=re.escape(OPENCV_MISSING)):
        CameraSpooler("0", tmp_path, threading.Event())
    monkeypatch.setattr(cli, "stop_on_signals", lambda stop: None)
    argv = ["--url", "http://127.0.0.1:9", "watch", str(tmp_path / "in"), "--product", "p", "--out", str(tmp_path)]
    assert cli.main([*argv, "--camera", "0"]) == 2
    told = capsys.readouterr().err
    assert "pip install opencv-python-headless" in told
    assert "pip install 'dcpsfr-inspect[camera]'" not in told  # an empty extra: it would install nothing


def test_camera_frames_from_a_video_are_spooled_and_sent(folders, tmp_path: Path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV not installed (the `camera` extra)")

    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))  # (H, W, 3) BGR
    writer.release()
    frames, out = folders
    spooler = CameraSpooler(str(video), frames, threading.Event(), fps=0)
    spooler.run()  # a video file ends the capture
    spooled = sorted(frames.iterdir())
    assert spooler.error is None and len(spooled) == 4
    assert all(Image.open(path).size == (64, 48) for path in spooled)
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 4}
    assert fake.sent_files == [path.name for path in spooled]


def test_unopenable_camera_is_a_clear_error(tmp_path: Path):
    pytest.importorskip("cv2", reason="OpenCV not installed (the `camera` extra)")
    with pytest.raises(CameraUnavailable, match="cannot open camera"):
        CameraSpooler(str(tmp_path / "no-such-stream.avi"), tmp_path, threading.Event())


# --- watch: only finished files, only what the service accepts ----------------------------------------------


def image_file(fmt: str, width: int = 64, height: int = 48) -> bytes:
    """Noise (it does not compress): half of the file is half of the pixels."""
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "settle_s", "pause_s", "why"),
    [
        ("TIFF", 2.0, 0.3, "the pause is shorter than the settle time"),
        ("PNG", 0.05, 1.0, "the PNG has no IEND yet, however long the pause"),
        ("JPEG", 0.05, 1.0, "the JPEG has no EOI yet, however long the pause"),
        ("BMP", 0.05, 1.0, "the BMP is shorter than its header says"),
    ],
)
def test_a_writer_pausing_mid_file_gets_one_result_and_no_error(folders, fmt, settle_s, pause_s, why):
    frames, out = folders
    data = image_file(fmt)
    fake = FakeService(decode=True)  # half a file would be answered 400, as the service does
    writer = start_pausing_writer(frames / f"frame.{fmt.lower()}", data, pause_s)
    try:
        counts = run_watch(fake, frames, out, poll_s=0.02, settle_s=settle_s)  # scans many times during the pause
    finally:
        writer.join(30)
    assert counts == {"done": 1}, why
    assert fake.sent_sizes == [len(data)], f"sent {fake.sent_sizes} bytes of {len(data)}: {why}"
    assert result_files(out) == ["frame.json"] and not list(out.glob("*.error.json"))


def test_a_file_written_under_a_temporary_name_is_sent_once_renamed(folders):
    frames, out = folders
    data = image_file("TIFF")  # no end marker: only the name tells that it is unfinished
    for name in (".hidden.png", "~office.png", "frame.png.tmp", "frame.png.partial", "frame.jpg.crdownload"):
        (frames / name).write_bytes(png())
    fake = FakeService(decode=True)
    writer = start_pausing_writer(frames / "frame.tif.part", data, 1.0, rename_to=frames / "frame.tif")
    try:
        counts = run_watch(fake, frames, out, poll_s=0.02, settle_s=0.0)
        if not counts:  # the once-run found only temporary files and ended before the rename
            writer.join(30)
            counts = run_watch(fake, frames, out, poll_s=0.02, settle_s=0.0)
    finally:
        writer.join(30)
    assert counts == {"done": 1} and fake.sent_files == ["frame.tif"] and fake.sent_sizes == [len(data)]


def test_only_suffixes_the_service_accepts_are_picked_up(folders):
    frames, out = folders
    accepted = ["a.png", "b.JPG", "c.jpeg", "d.bmp", "e.tif", "f.TIFF"]
    for name in [*accepted, "g.webp", "h.gif", "i.txt", "j.png.json", "noext", "k.pgm"]:
        (frames / name).write_bytes(png())
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": len(accepted)}
    assert sorted(fake.sent_files) == sorted(accepted)


def test_the_client_and_the_service_share_one_list_of_formats():
    import service.imaging.decode

    assert service.imaging.decode.ACCEPTED_FORMATS is ACCEPTED_FORMATS
    pillow = Image.registered_extensions()  # ".png" -> "PNG"
    assert {suffix: pillow.get(suffix) in ACCEPTED_FORMATS for suffix in ACCEPTED_SUFFIXES} == dict.fromkeys(
        ACCEPTED_SUFFIXES, True
    )
    assert {suffix for suffix, fmt in pillow.items() if fmt in ACCEPTED_FORMATS} == ACCEPTED_SUFFIXES


def test_the_client_imports_without_the_service_stack():
    """The client stays light: no torch, numpy, Pillow or web framework; of the model, only its standard-library
    modules (argparse types, durable files) and none of the rest of the service."""
    blocked = ("PIL", "numpy", "torch", "timm", "open_clip", "fastapi", "starlette", "pydantic")
    code = (
        f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\nimport service.client.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('model', 'service')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = eval(done.stdout)
    assert {m for m in loaded if m.startswith("model")} == {"model", "model.argtypes", "model.files"}
    assert {m for m in loaded if m.startswith("service") and not m.startswith("service.client")} == {
        "service",
        "service.imaging",
        "service.imaging.formats",
    }


def test_a_frame_must_stay_unchanged_for_the_settle_time(folders):
    frames, _ = folders
    now = [100.0]
    scanner = FolderScanner(frames, settle_s=2.0, clock=lambda: now[0])
    [path] = add_frames(frames, 1)
    assert scanner.settled_frames() == []
    now[0] = 101.9
    assert scanner.settled_frames() == [] and scanner.unsettled == 1
    path.write_bytes(png(width=9))  # the writer goes on: the settle time starts again
    now[0] = 103.0
    assert scanner.settled_frames() == []
    now[0] = 104.9
    assert scanner.settled_frames() == []
    now[0] = 105.0
    [frame] = scanner.settled_frames()
    assert frame.path == path and frame.size == path.stat().st_size and scanner.unsettled == 0


def test_a_file_without_its_end_is_sent_after_the_grace_time(folders):
    """A file cut for good (the writer died) is not held forever: the service then rejects it."""
    frames, _ = folders
    now = [0.0]
    scanner = FolderScanner(frames, settle_s=1.0, incomplete_grace_s=30.0, clock=lambda: now[0])
    (frames / "cut.png").write_bytes(image_file("PNG")[:300])
    for now[0] in (0.0, 1.0, 30.9):
        assert scanner.settled_frames() == [] and scanner.unsettled == 1
    now[0] = 31.0
    assert [frame.path.name for frame in scanner.settled_frames()] == ["cut.png"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_looks_complete_finds_the_end_of_png_jpeg_and_bmp(tmp_path: Path, fmt: str):
    data = image_file(fmt)
    path = tmp_path / "frame"
    for cut in (0, 1, 2, 5, 20, 300, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        assert not looks_complete(path, cut), f"{fmt} cut after {cut} of {len(data)} bytes looks complete"
    path.write_bytes(data)
    assert looks_complete(path, len(data))
    if fmt == "JPEG":  # padding after the end marker, as some cameras write
        path.write_bytes(data + b"\x00" * 16)
        assert looks_complete(path, len(data) + 16)


# --- inspect: one bad file among many ------------------------------------------------------------------------


def fake_client(monkeypatch, fake: FakeService) -> None:
    """cli.main talks to `fake` instead of a URL."""
    monkeypatch.setattr(cli, "InspectApi", partial(InspectApi, transport=httpx.MockTransport(fake)))
    monkeypatch.setattr(cli, "stop_on_signals", lambda stop: None)


@pytest.mark.parametrize(("status", "code"), [(401, 2), (404, 2), (405, 2), (409, 2), (503, 1)])
def test_exit_status_is_2_for_misconfiguration_and_1_for_a_failed_request(tmp_path, monkeypatch, capsys, status, code):
    """As the epilog says: a 405 (a --url with a wrong path prefix) is misconfiguration (2), not a failed request."""
    frame = tmp_path / "a.png"
    frame.write_bytes(png())
    fake_client(monkeypatch, FakeService([status] * 10))
    argv = [
        "--url",
        "http://service",
        "--max-attempts",
        "1",
        "inspect",
        "--product",
        "p1",
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main([*argv, str(frame)]) == code
    assert f"HTTP {status}" in capsys.readouterr().err


def test_inspect_with_a_bad_file_inspects_the_others_and_exits_non_zero(tmp_path: Path, monkeypatch, capsys):
    files = [tmp_path / name for name in ("a.png", "b.png", "c.png", "d.png")]
    for shade, path in enumerate(files):
        path.write_bytes(png(shade=shade))
    files[1].write_text("not an image")
    fake = FakeService(decode=True)
    fake_client(monkeypatch, fake)
    out = tmp_path / "out"
    argv = ["--url", "http://service", "inspect", "--product", "p1", "--out", str(out)]
    assert cli.main([*argv, *map(str, files), str(tmp_path / "missing.png")]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["file"]).name for line in lines] == ["a.png", "b.png", "c.png", "d.png", "missing.png"]
    assert [line.get("score") for line in lines] == [0.25, None, 0.25, 0.25, None]
    assert lines[1]["status"] == 415 and "does not decode" in lines[1]["error"]
    assert lines[4]["status"] is None and "cannot read" in lines[4]["error"]
    assert fake.sent_files == ["a.png", "c.png", "d.png"]  # the batch was refused whole, then one by one
    assert sorted(p.name for p in out.glob("*.json")) == [
        "a.json",
        "b.error.json",
        "c.json",
        "d.json",
        "missing.error.json",
    ]


def test_watch_once_exits_non_zero_when_a_frame_was_rejected(folders, monkeypatch):
    frames, out = folders
    add_frames(frames, 2)
    (frames / "broken.png").write_text("not an image")
    fake = FakeService(decode=True)
    fake_client(monkeypatch, fake)
    argv = ["--url", "http://service", "watch", str(frames), "--product", "p1", "--out", str(out)]
    argv += ["--once", "--poll", "0.01", "--settle", "0"]
    assert cli.main(argv) == 1
    assert sorted(p.name for p in out.glob("*.json")) == ["broken.error.json", "frame000.json", "frame001.json"]
    assert cli.main(argv) == 0, "a rejected frame is recorded once and not sent again"
    assert len(fake.requests) == 3


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:8000", "ftp://cam/x", "http://"])
def test_a_url_that_is_not_http_is_a_usage_error_before_any_request(url, tmp_path, capsys):
    """`--url notaurl` is a usage error before any request: retried, it would look like a service that is down
    (forever under `watch`)."""
    frame = tmp_path / "f.png"
    frame.write_bytes(b"not sent")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--url", url, "--max-attempts", "1", "inspect", "--product", "p", str(frame)])
    assert exit_info.value.code == 2
    assert "http://" in capsys.readouterr().err


def test_http_and_https_urls_are_accepted():
    parser = cli.build_parser()
    for url in ("http://127.0.0.1:8000", "https://inspect.example/api"):
        assert parser.parse_args(["--url", url, "inspect", "--product", "p", "f.png"]).url == url


# --- usage errors: exit 2 with one line, before any request -------------------------------------------------


def usage_error_line(capsys) -> str:
    """The one line a usage error prints on stderr."""
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def watch_argv(frames: Path, out: Path, *extra: str) -> list[str]:
    return ["--url", "http://service", "watch", str(frames), "--product", "p1", "--out", str(out), "--once", *extra]


@pytest.mark.parametrize("where", ["nowhere/deep", "a-file"])
def test_a_watch_folder_that_is_not_there_is_a_usage_error(tmp_path: Path, monkeypatch, capsys, where):
    """A DIR typo was created and watched, empty, forever (or `--once`: "nothing sent", exit 0)."""
    (tmp_path / "a-file").write_bytes(png())
    fake = FakeService()
    fake_client(monkeypatch, fake)
    frames = tmp_path / where
    assert cli.main(watch_argv(frames, tmp_path / "out")) == 2
    what = "does not exist" if where == "nowhere/deep" else "is not a folder"
    assert usage_error_line(capsys) == f"error: watch folder {frames} {what} (a typo? only --camera creates DIR)"
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out").exists() and fake.requests == []


def test_with_a_camera_the_watch_folder_is_its_spool_and_is_created(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # the camera then fails to open, after DIR was accepted
    fake_client(monkeypatch, FakeService())
    spool = tmp_path / "line1" / "spool"
    assert cli.main([*watch_argv(spool, tmp_path / "out"), "--camera", "0"]) == 2
    assert spool.is_dir() and OPENCV_MISSING in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inspect", "watch"])
@pytest.mark.parametrize("under", ["", "results"])
def test_an_out_folder_that_is_a_file_is_a_usage_error(tmp_path: Path, monkeypatch, capsys, command, under):
    """`--out` at (or under) a plain file was a NotADirectoryError/FileExistsError traceback, exit 1."""
    (tmp_path / "frames").mkdir()
    add_frames(tmp_path / "frames", 1)
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    out = blocker / under if under else blocker
    fake = FakeService()
    fake_client(monkeypatch, fake)
    if command == "inspect":
        argv = ["--url", "http://service", "inspect", "--product", "p1", "--out", str(out), str(tmp_path / "a.png")]
    else:
        argv = watch_argv(tmp_path / "frames", out)
    assert cli.main(argv) == 2
    expected = f"error: --out {out}: cannot use it as the results folder ({blocker} is a file, not a folder)"
    assert usage_error_line(capsys) == expected
    assert fake.requests == [] and blocker.read_text() == "not a folder"


def test_a_journal_under_a_file_is_a_usage_error(folders, tmp_path: Path, monkeypatch, capsys):
    frames, out = folders
    blocker = tmp_path / "journal-here"
    blocker.write_text("")
    fake_client(monkeypatch, FakeService())
    assert cli.main([*watch_argv(frames, out), "--journal", str(blocker / "j.sqlite3")]) == 2
    expected = f"error: journal {blocker / 'j.sqlite3'}: cannot open it ({blocker} is a file, not a folder)"
    assert usage_error_line(capsys) == expected


def test_a_missing_reference_file_is_a_usage_error(tmp_path: Path, monkeypatch, capsys):
    """It was a SystemExit string: exit 1, like a failed request."""
    fake = FakeService()
    fake_client(monkeypatch, fake)
    argv = ["--url", "http://service", "references", "--product", "p1", str(tmp_path / "good.png")]
    assert cli.main(argv) == 2
    assert usage_error_line(capsys) == f"error: not a file: {tmp_path / 'good.png'}" and fake.requests == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch", "0", "argument --batch: 0 is out of range: must be at least 1"),
        ("--batch", "x", "argument --batch: 'x' is not an integer"),
        ("--max-attempts", "0", "argument --max-attempts: 0 is out of range: must be at least 1"),
        ("--timeout", "0", "argument --timeout: 0 is out of range: must be a number of seconds > 0"),
        ("--timeout", "-1", "argument --timeout: -1 is out of range: must be a number of seconds > 0"),
        ("--timeout", "nan", "argument --timeout: nan is out of range: must be a number of seconds > 0"),
        ("--timeout", "inf", "argument --timeout: inf is out of range: must be a number of seconds > 0"),
    ],
)
def test_numbers_out_of_range_are_usage_errors_naming_the_range(tmp_path, monkeypatch, capsys, option, value, message):
    """`--batch 0` exited 1 through a SystemExit string; `--timeout 0` was retried as a ConnectError and
    `--max-attempts 0` was accepted."""
    fake = FakeService()
    fake_client(monkeypatch, fake)
    frame = tmp_path / "a.png"
    frame.write_bytes(png())
    given = ["inspect", option, value] if option == "--batch" else [option, value, "inspect"]  # --batch: inspect's
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--url", "http://service", *given, "--product", "p1", str(frame)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err and fake.requests == []


@pytest.mark.parametrize(
    ("command", "given", "attempts"), [("watch", [], None), ("inspect", [], 5), ("watch", ["3"], 3)]
)
def test_max_attempts_default_is_forever_for_watch_only(folders, monkeypatch, command, given, attempts):
    frames, out = folders
    policies = []

    def api(*args, retry: RetryPolicy, **kwargs) -> InspectApi:
        policies.append(retry)
        return InspectApi(*args, retry=retry, transport=httpx.MockTransport(FakeService()), **kwargs)

    monkeypatch.setattr(cli, "InspectApi", api)
    monkeypatch.setattr(cli, "stop_on_signals", lambda stop: None)
    options = ["--max-attempts", *given] if given else []
    frame = add_frames(frames, 1)[0]
    rest = watch_argv(frames, out)[2:] if command == "watch" else ["inspect", "--product", "p1", str(frame)]
    assert cli.main(["--url", "http://service", *options, *rest]) == 0
    assert [policy.max_attempts for policy in policies] == [attempts]


@pytest.mark.parametrize("product", ["bad id", "", "-lead", "a" * 65, "x/y"])
def test_an_invalid_product_id_is_a_usage_error_before_any_request(tmp_path, monkeypatch, capsys, product):
    """Each file got a 422 from the service and the client exited 1."""
    fake = FakeService()
    fake_client(monkeypatch, fake)
    frame = tmp_path / "a.png"
    frame.write_bytes(png())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--url", "http://service", "inspect", f"--product={product}", str(frame)])
    assert exit_info.value.code == 2 and fake.requests == []
    assert f"argument --product: {product!r} is not a product id: 1-64 letters" in capsys.readouterr().err


def test_the_client_checks_product_ids_with_the_services_pattern():
    """One pattern in service.formats (standard library only) serves the store and the client."""
    from service.products import store

    assert cli.PRODUCT_ID is store.PRODUCT_ID
    assert cli.product_id("bottle-2.v1_a") == "bottle-2.v1_a"


@pytest.mark.parametrize("old", ["DCPSFR_API_KEY", "DCPSFR_URL"])
def test_the_old_environment_names_are_a_usage_error_naming_the_new_ones(old, tmp_path, monkeypatch, capsys):
    """One letter from the service's DCPSFR_API_KEYS was one letter too few: the client's names are its own now."""
    monkeypatch.setenv(old, "x")
    frame = tmp_path / "f.png"
    frame.write_bytes(png())
    assert cli.main(["inspect", "--product", "p", str(frame)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the client's environment variables were renamed") and old in err
    assert {"DCPSFR_API_KEY": "DCPSFR_CLIENT_API_KEY", "DCPSFR_URL": "DCPSFR_CLIENT_URL"}[old] in err


@pytest.mark.parametrize("spelled", ["as DIR", "DIR/.", "a link to DIR"])
def test_an_out_folder_that_is_the_watched_folder_is_a_usage_error(folders, tmp_path, monkeypatch, capsys, spelled):
    """Its <stem>.mask.png files would be picked up as frames, and their masks too, without end."""
    frames, _ = folders
    add_frames(frames, 1)
    out = {"as DIR": frames, "DIR/.": frames / "."}.get(spelled, tmp_path / "link")
    if spelled == "a link to DIR":
        out.symlink_to(frames, target_is_directory=True)
    fake = FakeService()
    fake_client(monkeypatch, fake)
    assert cli.main(watch_argv(frames, out)) == 2
    assert usage_error_line(capsys) == (
        f"error: --out {out} is the watched folder: its result images (<stem>.mask.png) would be sent as frames; "
        "use another folder (a subfolder of DIR is fine)"
    )
    assert fake.requests == [] and sorted(path.name for path in frames.iterdir()) == ["frame000.png"]


@pytest.mark.parametrize("name", ["journal.png", "log.TIF"])
def test_a_journal_under_an_image_name_in_the_watched_folder_is_a_usage_error(folders, monkeypatch, capsys, name):
    """The journal would be sent as a frame (and, with --delete-sent, deleted once rejected: every record lost)."""
    frames, out = folders
    fake = FakeService()
    fake_client(monkeypatch, fake)
    journal = frames / name
    assert cli.main([*watch_argv(frames, out), "--journal", str(journal)]) == 2
    assert usage_error_line(capsys) == (
        f"error: --journal {journal} lies in the watched folder under an image name, so it would be sent as a frame; "
        "use another name (such as journal.sqlite3) or folder"
    )
    assert fake.requests == [] and not journal.exists() and not out.exists()


def test_outputs_in_a_subfolder_and_a_journal_in_the_watched_folder_are_fine(folders, monkeypatch):
    """DIR is scanned alone, not its subfolders, and a journal named *.sqlite3 is never a frame."""
    frames, _ = folders
    add_frames(frames, 2)
    fake = FakeService()
    fake_client(monkeypatch, fake)
    argv = [*watch_argv(frames, frames / "results"), "--journal", str(frames / "journal.sqlite3"), "--poll", "0.01"]
    assert cli.main([*argv, "--settle", "0"]) == 0
    assert fake.sent_files == ["frame000.png", "frame001.png"]
    assert result_files(frames / "results") == ["frame000.json", "frame001.json"]

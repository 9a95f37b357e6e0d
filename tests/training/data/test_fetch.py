"""Dataset fetch against a loopback HTTP server: download, resume, sha256 refusal, unsafe archives, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from model.training.data.datasets import open_dataset
from model.training.data.fetch import (
    STAMP_NAME,
    ChecksumError,
    OfflineError,
    UnsafeArchiveError,
    check_member,
    download,
    fetch_dataset,
)
from tests.helpers.loopback import closed_port_url, evil_archive, loopback_server, mvtec_archive, sha256, visa_archive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def archives():
    return {"mvtec": mvtec_archive(), "visa": visa_archive()}


@pytest.fixture
def server():
    with loopback_server() as state:
        yield state


def test_fetch_mvtec_prints_licence_first_then_verifies_extracts_and_stamps(server, archives, tmp_path):
    url = server.serve("mvtec_anomaly_detection.tar.xz", archives["mvtec"])
    said = []
    root = fetch_dataset(
        "mvtec", tmp_path / "mvtec_ad", url=url, sha256=sha256(archives["mvtec"]), progress=False,
        say=lambda line: said.append((line, len(server.requests))),
    )  # fmt: skip
    first_line, requests_before = said[0]
    assert "CC BY-NC-SA 4.0" in first_line and requests_before == 0  # licence before the first byte
    dataset = open_dataset(f"mvtec:{root}")
    assert dataset.categories == ("bottle", "screw")
    assert len(dataset.train_images("bottle")) == 4
    assert [s.label for s in dataset.test_samples("screw")] == [1, 1, 0, 0]
    stamp = json.loads((root / STAMP_NAME).read_text())
    assert stamp["sha256"] == sha256(archives["mvtec"]) and stamp["categories"] == ["bottle", "screw"]
    assert not (root / "mvtec_anomaly_detection.tar.xz").exists()  # archive removed after extraction
    assert not any(p.name.startswith(".extracting") for p in root.iterdir())

    said.clear()
    fetch_dataset(
        "mvtec", root, url=url, sha256=sha256(archives["mvtec"]), progress=False, say=lambda s: said.append(s)
    )
    assert len(server.requests) == 1 and "already" in said[0]  # second run: no request at all


def test_fetch_visa_reads_through_its_split_csv(server, archives, tmp_path):
    url = server.serve("VisA_20220922.tar", archives["visa"])
    said = []
    root = fetch_dataset("visa", tmp_path / "visa", url=url, sha256=sha256(archives["visa"]), progress=False,
                         say=said.append)  # fmt: skip
    assert "CC BY 4.0" in said[0]
    dataset = open_dataset(f"visa:{root}")
    assert dataset.categories == ("candle", "pcb1")
    samples = dataset.test_samples("pcb1")
    assert [s.label for s in samples] == [0, 0, 1, 1]
    assert samples[-1].load_mask().any()  # label-valued masks (1, not 255) read as anomalous


def test_a_dropped_connection_is_resumed_with_range(server, archives, tmp_path):
    body = archives["visa"]
    url = server.serve("VisA_20220922.tar", body, truncate_first=len(body) // 3)
    path = download(url, tmp_path / "VisA_20220922.tar", sha256(body), progress=False)
    assert path.read_bytes() == body
    assert server.requests == [("/VisA_20220922.tar", None), ("/VisA_20220922.tar", f"bytes={len(body) // 3}-")]
    assert not (tmp_path / "VisA_20220922.tar.part").exists()


def test_a_part_file_left_by_an_earlier_run_is_continued(server, archives, tmp_path):
    body = archives["mvtec"]
    url = server.serve("m.tar.xz", body)
    (tmp_path / "m.tar.xz.part").write_bytes(body[:1000])
    assert download(url, tmp_path / "m.tar.xz", sha256(body), progress=False).read_bytes() == body
    assert server.requests == [("/m.tar.xz", "bytes=1000-")]


def test_a_complete_part_file_is_verified_without_downloading_again(server, archives, tmp_path):
    body = archives["mvtec"]
    url = server.serve("m.tar.xz", body)
    (tmp_path / "m.tar.xz.part").write_bytes(body)
    assert download(url, tmp_path / "m.tar.xz", sha256(body), progress=False).read_bytes() == body
    assert server.requests == [("/m.tar.xz", f"bytes={len(body)}-")]  # answered 416: nothing left to send


def test_a_server_that_ignores_range_starts_over(server, archives, tmp_path):
    body = archives["mvtec"]
    url = server.serve("m.tar.xz", body, ignore_range=True)
    (tmp_path / "m.tar.xz.part").write_bytes(b"stale bytes from another file")
    assert download(url, tmp_path / "m.tar.xz", sha256(body), progress=False).read_bytes() == body


def test_a_checksum_mismatch_is_refused_and_nothing_is_extracted(server, archives, tmp_path):
    url = server.serve("mvtec_anomaly_detection.tar.xz", archives["mvtec"])
    root = tmp_path / "mvtec_ad"
    with pytest.raises(ChecksumError, match="does not match the published"):
        fetch_dataset("mvtec", root, url=url, sha256="0" * 64, progress=False, say=lambda s: None)
    assert list(root.iterdir()) == []  # no archive, no .part, no categories, no stamp


def test_an_archive_with_a_parent_member_is_refused(server, tmp_path):
    body = evil_archive()
    url = server.serve("evil.tar", body)
    root = tmp_path / "deep" / "mvtec_ad"
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./escaped\.txt'.*outside"):
        fetch_dataset("mvtec", root, url=url, sha256=sha256(body), progress=False, say=lambda s: None)
    assert not (root.parent / "escaped.txt").exists()
    assert not (root / "bottle").exists()  # the member before the bad one was not moved in either
    assert not (root / STAMP_NAME).exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("/etc/passwd"),
        _member("C:/windows/x"),
        _member("a/../../x"),
        _member("..\\x"),
        _member("a/link", tarfile.SYMTYPE, "/etc/passwd"),
        _member("a/link", tarfile.SYMTYPE, "../../outside"),
        _member("a/hard", tarfile.LNKTYPE, "../outside"),
        _member("a/dev", tarfile.CHRTYPE),
        _member("a/fifo", tarfile.FIFOTYPE),
    ],
    ids=lambda m: m.name + ("->" + m.linkname if m.linkname else ""),
)
def test_members_leaving_the_folder_links_out_and_devices_are_refused(member):
    with pytest.raises(UnsafeArchiveError):
        check_member(member, "x.tar")


def test_ordinary_members_and_inside_links_pass():
    for member in (
        _member("bottle/train/good/000.png"),
        _member("./bottle/"),
        _member("a/b/link", tarfile.SYMTYPE, "../c.png"),
        _member("a/hard", tarfile.LNKTYPE, "a/c.png"),
    ):
        check_member(member, "x.tar")


def test_offline_cli_says_one_line_and_exits_non_zero(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "model.training.data", "fetch", "mvtec", "--root", str(tmp_path),
         "--url", closed_port_url()],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot reach 127.0.0.1") and "internet" in done.stderr


def test_offline_raises_offline_error(tmp_path):
    with pytest.raises(OfflineError):
        download(closed_port_url(), tmp_path / "a.tar", "0" * 64, progress=False)

"""Content-addressed blobs: durable, idempotent, checked on read, collected only when old and unreferenced."""

from __future__ import annotations

import os
import time

import pytest

from service.records.archive import FrameArchive
from service.records.blobs import BlobCorrupt, BlobStore, sha256_hex


def back_date(store: BlobStore, sha256: str, seconds: float = 3600) -> None:
    stamp = time.time() - seconds
    os.utime(store.path(sha256), (stamp, stamp))


def test_put_names_the_blob_by_its_sha256_and_leaves_no_temporary_file(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    sha256 = store.put(b"bank")
    assert sha256 == sha256_hex(b"bank") and store.path(sha256).read_bytes() == b"bank"
    assert [p.name for p in store.folder.rglob("*") if p.is_file()] == [sha256]
    assert [name for name, _ in store.listing()] == [sha256]


def test_putting_the_same_content_again_rewrites_nothing_but_makes_it_young(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    sha256 = store.put(b"frame")
    back_date(store, sha256)
    inode = store.path(sha256).stat().st_ino
    assert store.put(b"frame") == sha256
    assert store.path(sha256).stat().st_ino == inode
    assert time.time() - store.path(sha256).stat().st_mtime < 60


@pytest.mark.parametrize("damage", [b"other bytes", b""])
def test_read_refuses_bytes_that_do_not_match_the_name(tmp_path, damage):
    store = BlobStore(tmp_path / "blobs")
    sha256 = store.put(b"bank")
    store.path(sha256).write_bytes(damage)
    with pytest.raises(BlobCorrupt, match="does not match its sha256"):
        store.read(sha256)
    store.delete(sha256)
    with pytest.raises(FileNotFoundError):
        store.read(sha256)


@pytest.mark.parametrize("name", ["../x", "g" * 64, "0" * 63, "A" * 64])
def test_names_that_are_no_sha256_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a sha256"):
        BlobStore(tmp_path).path(name)


def test_collect_removes_only_old_unreferenced_blobs(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    referenced, young, old = (store.put(data) for data in (b"named by a row", b"being committed", b"orphan"))
    for sha256 in (referenced, old):
        back_date(store, sha256)
    (store.path(old).parent / f".{old}.abc.tmp").write_bytes(b"a crashed write")  # debris is not a blob
    deleted = store.collect(lambda names: [n for n in names if n != referenced], grace_s=600)
    assert deleted == 1 and {n for n, _ in store.listing()} == {referenced, young}


def test_the_frame_archive_is_the_same_blob_store(tmp_path):
    archive = FrameArchive(tmp_path / "frames")
    sha256 = archive.put(b"frame")
    assert archive.path(sha256) == tmp_path / "frames" / sha256[:2] / sha256
    assert archive.get(sha256) == b"frame" and archive.has(sha256)
    assert archive.get("0" * 64) is None

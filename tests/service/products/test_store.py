"""Product store: atomic versions on disk, restart reload, crash debris, nothing outside the data dir."""

from __future__ import annotations

import json
import os
import time

import pytest

from service.products.store import DEBRIS_AGE_S, ProductStore, is_valid_product_id
from tests.helpers.apps import STORE_CALIBRATION

CALIBRATION = STORE_CALIBRATION


@pytest.fixture
def store(tmp_path):
    return ProductStore(tmp_path / "products")


def reopened(store: ProductStore, detector) -> ProductStore:
    fresh = ProductStore(store.root)
    fresh.load_all(detector.load_references)
    return fresh


def test_commit_writes_a_version_and_a_pointer(store, refs):
    product = store.commit("widget-1", refs, CALIBRATION)
    assert product.version == 1
    folder = store.root / "widget-1"
    assert json.loads((folder / "current.json").read_text())["version"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["current.json", "v1"]
    assert product.threshold == 0.5 and product.pixel_threshold == 0.6


def test_replacing_keeps_only_the_new_version(store, refs):
    store.commit("widget", refs, CALIBRATION)
    second = store.commit("widget", refs, CALIBRATION)
    assert second.version == 2
    assert sorted(p.name for p in (store.root / "widget").iterdir()) == ["current.json", "v2"]
    assert store.get("widget") is second


def test_restart_reloads_every_product_with_its_overrides(store, refs, tiny_detector):
    store.commit("a", refs, CALIBRATION)
    store.commit("b", refs, CALIBRATION)
    store.set_thresholds("b", 0.9, None)
    fresh = reopened(store, tiny_detector)
    assert [p.product_id for p in fresh.all()] == ["a", "b"]
    assert fresh.get("b").threshold == 0.9
    assert fresh.get("b").pixel_threshold == 0.6  # not overridden: calibrated
    assert fresh.get("a").refs.bank_size == refs.bank_size


def test_a_new_upload_resets_threshold_overrides(store, refs):
    store.commit("a", refs, CALIBRATION)
    store.set_thresholds("a", 0.9, 0.8)
    assert store.commit("a", refs, CALIBRATION).threshold == 0.5


def age(path, seconds: float = DEBRIS_AGE_S + 60) -> None:
    """Back-date a path, as if it were left by a crash that long ago."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_crash_debris_is_cleaned_and_the_old_version_stays_current(store, refs, tiny_detector):
    store.commit("a", refs, CALIBRATION)
    folder = store.root / "a"
    debris = [
        store.root / ".tmp-a-deadbeef",  # crash while writing v2
        folder / "v3",  # crash after the rename, before the pointer moved
        folder / ".current.json.cafe.tmp",  # crash while writing the pointer (model.files.atomic_path)
        store.root / ".trash-b-0123",  # crash while deleting b
        store.root / "c",  # crash during c's first upload: no pointer yet
    ]
    for path in debris:
        path.write_text("{") if path.name.startswith(".current") else path.mkdir()
    (store.root / "c" / "v1").mkdir()
    for path in debris:
        age(path)
    fresh = reopened(store, tiny_detector)
    assert [p.product_id for p in fresh.all()] == ["a"]
    assert fresh.get("a").version == 1
    assert sorted(p.name for p in store.root.iterdir()) == ["a"]
    assert sorted(p.name for p in folder.iterdir()) == ["current.json", "v1"]


def test_young_debris_is_kept_it_may_be_another_replicas_write_in_progress(store, refs, tiny_detector):
    store.commit("a", refs, CALIBRATION)
    (store.root / ".tmp-a-feed").mkdir()
    (store.root / "new").mkdir()  # another replica's first upload, pointer not written yet
    reopened(store, tiny_detector)
    assert sorted(p.name for p in store.root.iterdir()) == [".tmp-a-feed", "a", "new"]


def test_unreadable_product_is_skipped_and_kept(store, refs, tiny_detector):
    store.commit("good", refs, CALIBRATION)
    store.commit("broken", refs, CALIBRATION)
    (store.root / "broken" / "v1" / "bank.npy").unlink()
    fresh = reopened(store, tiny_detector)
    assert [p.product_id for p in fresh.all()] == ["good"]
    assert (store.root / "broken" / "v1").is_dir()  # left for a human to look at


def test_delete_removes_the_folder(store, refs):
    store.commit("a", refs, CALIBRATION)
    assert store.delete("a")
    assert store.get("a") is None
    assert list(store.root.iterdir()) == []
    assert not store.delete("a")


def test_failed_write_leaves_the_current_version_intact(store, refs, monkeypatch):
    first = store.commit("a", refs, CALIBRATION)

    def disk_full(folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(refs), "save", lambda self, folder: disk_full(folder))
    with pytest.raises(OSError, match="No space left"):
        store.commit("a", refs, CALIBRATION)
    assert store.get("a") is first
    assert sorted(p.name for p in (store.root / "a").iterdir()) == ["current.json", "v1"]


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "-a", ".hidden", "a b", "x" * 65, "é"])
def test_invalid_product_ids_are_refused(store, refs, bad):
    assert not is_valid_product_id(bad)
    with pytest.raises(ValueError, match="invalid product id"):
        store.commit(bad, refs, CALIBRATION)
    assert not store.root.exists() or list(store.root.iterdir()) == []


@pytest.mark.parametrize("good", ["a", "A1", "bottle_2024.v3", "x" * 64, "0-0"])
def test_valid_product_ids(good):
    assert is_valid_product_id(good)

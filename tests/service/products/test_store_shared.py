"""Product store under races and shared by replicas: two ProductStore objects on one folder stand for two
processes (the real multi-process case is tests/e2e/test_replicas.py)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest
from service.products.files import LOCK, LOCK_STALE_S, StoreError

import service.products.store
from service.products.frames import FrameStore, new_frame
from service.products.store import ProductStore, StoreConflict, StoreUnavailable
from tests.helpers.apps import STORE_CALIBRATION, upload
from tests.helpers.images import image_bytes

CALIBRATION = STORE_CALIBRATION


@pytest.fixture
def replicas(tmp_path, tiny_detector):
    """Two stores on one products folder, both opened (lazy) like two service processes."""
    stores = [ProductStore(tmp_path / "products") for _ in range(2)]
    for store in stores:
        store.open(tiny_detector.load_references)
    return stores


def test_another_replicas_product_is_found_on_disk_before_none(replicas, refs):
    a, b = replicas
    written = a.commit("p", refs, CALIBRATION)
    found = b.get("p")
    assert found is not None and (found.version, found.uid) == (written.version, written.uid)
    assert b.get("unknown") is None


def test_refresh_notices_new_versions_thresholds_files_and_deletes(replicas, refs):
    a, b = replicas
    heard = []
    b.add_listener(lambda product_id, product: heard.append((product_id, product and product.generation)))
    first = a.commit("p", refs, CALIBRATION)
    assert b.refresh() == ["p"] and b.get("p").uid == first.uid
    assert b.refresh() == []  # nothing changed: nothing re-read
    second = a.commit("p", refs, CALIBRATION)
    b.refresh()
    assert (b.get("p").version, b.get("p").uid) == (2, second.uid)
    a.set_thresholds("p", 0.9, None)
    b.refresh()
    assert b.get("p").threshold == 0.9 and b.get("p").refs is b.get("p").refs  # same version: not re-read
    a.write_product_file("p", "rules.json", b'{"max_area_px": 3}')
    b.refresh()
    assert b.product_file("p", "rules.json").read_bytes() == b'{"max_area_px": 3}'
    assert b.get("p").generation == a.get("p").generation == 4
    assert a.delete("p")
    assert b.refresh() == ["p"] and b.get("p") is None
    assert [h[0] for h in heard] == ["p"] * 5 and heard[-1] == ("p", None)
    assert [h[1] for h in heard[:4]] == [1, 2, 3, 4]


def test_per_product_files_survive_a_new_version_and_go_with_a_delete(replicas, refs):
    a, _ = replicas
    a.commit("p", refs, CALIBRATION)
    a.write_product_file("p", "calibration-set.json", b"[]")
    a.commit("p", refs, CALIBRATION)
    assert a.product_file("p", "calibration-set.json").read_bytes() == b"[]"
    a.delete("p")
    assert not (a.root / "p").exists()
    assert a.write_product_file("p", "rules.json", b"{}") is None  # no product: nothing written
    for bad in ["v3", "current.json", ".hidden", "../x", "a/b"]:
        with pytest.raises(ValueError, match="invalid per-product file name"):
            a.product_file("p", bad)


def test_an_upload_begun_before_a_delete_does_not_resurrect_the_product(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    token = a.token("p")  # the upload route reads this before its fit
    assert b.delete("p")  # ... the delete happens during the fit, on any replica
    with pytest.raises(StoreConflict, match="deleted while this upload"):
        a.commit("p", refs, CALIBRATION, expected=token)
    assert a.get("p") is None and b.get("p") is None
    assert sorted(p.name for p in a.root.iterdir()) == []  # the upload's temp folder is gone too


def test_concurrent_uploads_one_wins_the_other_is_told(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    token_a, token_b = a.token("p"), b.token("p")
    won = b.commit("p", refs, CALIBRATION, expected=token_b)
    with pytest.raises(StoreConflict, match="version 2 was stored meanwhile"):
        a.commit("p", refs, CALIBRATION, expected=token_a)
    a.refresh()
    assert a.get("p").uid == b.get("p").uid == won.uid
    assert sorted(p.name for p in (a.root / "p").iterdir()) == ["current.json", "v2"]


def test_racing_writers_claim_distinct_versions_and_leave_one_consistent_product(replicas, refs):
    stores = replicas * 3  # six writers: two "processes", three threads each
    results, barrier = [], threading.Barrier(len(stores))

    def write(store):
        barrier.wait()
        results.append(store.commit("p", refs, CALIBRATION))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    versions = sorted(p.version for p in results)
    assert versions == list(range(1, len(stores) + 1))  # each claimed a number of its own
    pointer = json.loads((replicas[0].root / "p" / "current.json").read_text())
    assert pointer["version"] == max(versions)
    fresh = ProductStore(replicas[0].root)
    fresh.load_all(replicas[0]._load_references)
    assert fresh.get("p").version == max(versions)
    assert sorted(p.name for p in (fresh.root / "p").iterdir()) == ["current.json", f"v{max(versions)}"]


def test_delete_renames_on_disk_before_forgetting_and_a_refused_rename_keeps_everything(replicas, refs, monkeypatch):
    a, _ = replicas
    a.commit("p", refs, CALIBRATION)
    real_rename = os.rename

    def read_only(src, dst):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "rename", read_only)
    with pytest.raises(StoreError, match=r"could not delete product 'p'.*Read-only"):
        a.delete("p")
    monkeypatch.setattr(os, "rename", real_rename)
    assert a.get("p") is not None and (a.root / "p" / "current.json").is_file()
    assert not (a.root / "p" / LOCK).exists()  # the lock was let go


def test_a_lock_left_by_a_killed_writer_is_broken(replicas, refs):
    a, _ = replicas
    a.commit("p", refs, CALIBRATION)
    lock = a.root / "p" / LOCK
    lock.write_text("writer that was SIGKILLed")
    stamp = time.time() - LOCK_STALE_S - 5
    os.utime(lock, (stamp, stamp))
    assert a.commit("p", refs, CALIBRATION).version == 2
    assert not lock.exists()


# --- through the API ---------------------------------------------------------------------------------------


def test_api_upload_whose_fit_began_before_a_delete_answers_409_and_stays_deleted(client, monkeypatch):
    import service.products.workflows as workflows

    assert upload(client, "p", image_bytes(seed=1)).status_code == 201
    fitting, release = threading.Event(), threading.Event()
    real_fit = workflows.fit_and_calibrate

    def slow_fit(detector, **arguments):
        fitting.set()
        assert release.wait(60)
        return real_fit(detector, **arguments)

    monkeypatch.setattr(workflows, "fit_and_calibrate", slow_fit)
    answers = []
    uploading = threading.Thread(target=lambda: answers.append(upload(client, "p", image_bytes(seed=2))))
    uploading.start()
    assert fitting.wait(60)
    assert client.delete("/products/p").status_code == 204
    release.set()
    uploading.join(60)
    assert answers[0].status_code == 409
    assert "deleted while this upload" in answers[0].json()["detail"]
    assert client.get("/products/p").status_code == 404
    assert client.get("/products").json()["products"] == []


def test_api_delete_refused_by_the_disk_is_a_507_json_and_the_product_stays(client, monkeypatch):
    assert upload(client, "p", image_bytes(seed=1)).status_code == 201

    def read_only(src, dst):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "rename", read_only)
    answer = client.delete("/products/p")
    monkeypatch.undo()
    assert answer.status_code == 507
    assert "could not delete product 'p'" in answer.json()["detail"]
    assert client.get("/products/p").status_code == 200


def test_two_replicas_labelling_one_product_at_once_keep_both_labels(tmp_path, monkeypatch):
    """Replica A has read the labelled frames and not yet written them when replica B adds its label: B waits
    for the product's lock and appends to what A wrote, never over it."""
    (tmp_path / "products" / "widget").mkdir(parents=True)
    replica_a, replica_b = (FrameStore(ProductStore(tmp_path / "products"), 10, 10) for _ in range(2))
    label_a = new_frame("good", "feedback", "2026-11-29T17:00:00Z", "a.png")
    label_b = new_frame("defect", "feedback", "2026-11-29T17:00:00Z", "b.png")
    a_has_read, a_may_write = threading.Event(), threading.Event()
    read = FrameStore.frames

    def a_pauses_after_reading(self, product_id):
        frames = read(self, product_id)
        if self is replica_a and not a_has_read.is_set():
            a_has_read.set()
            a_may_write.wait(30)
        return frames

    monkeypatch.setattr(FrameStore, "frames", a_pauses_after_reading)
    a = threading.Thread(target=replica_a.add, args=("widget", [label_a], {label_a.frame_id: b"A"}))
    a.start()
    assert a_has_read.wait(30)
    b = threading.Thread(target=replica_b.add, args=("widget", [label_b], {label_b.frame_id: b"B"}))
    b.start()
    b.join(1.0)  # without a lock shared by the replicas, B has written by now
    a_may_write.set()
    a.join(30)
    b.join(30)
    kept = replica_b.frames("widget")
    assert {f.frame_id for f in kept} == {label_a.frame_id, label_b.frame_id}
    assert {replica_b.image_bytes("widget", f) for f in kept} == {b"A", b"B"}


def not_a_directory(root, monkeypatch):
    """A lost mount: the folder moved away and a file in its place."""
    root.rename(root.with_name("products.bak"))
    root.touch()

    def restore():
        root.unlink()
        root.with_name("products.bak").rename(root)

    return restore


def missing(root, monkeypatch):
    root.rename(root.with_name("products.bak"))
    return lambda: root.with_name("products.bak").rename(root)


def unreadable(root, monkeypatch):
    """EACCES on listing and opening (a chmod would not do: the tests may run as root)."""

    def refusing(call):
        def refuse(path, *args, **kwargs):
            if os.fspath(path) == os.fspath(root):
                raise PermissionError(13, "Permission denied", os.fspath(root))
            return call(path, *args, **kwargs)

        return refuse

    monkeypatch.setattr(service.products.store.os, "scandir", refusing(os.scandir))
    monkeypatch.setattr(service.products.store.os, "open", refusing(os.open))
    return monkeypatch.undo


@pytest.mark.parametrize(
    ("breakage", "error"),
    [(not_a_directory, "NotADirectoryError"), (missing, "FileNotFoundError"), (unreadable, "PermissionError")],
)
def test_a_lost_store_folder_keeps_every_product_until_it_is_back(replicas, refs, monkeypatch, caplog, breakage, error):
    caplog.set_level(logging.INFO, logger="service.products.store")
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    a.commit("q", refs, CALIBRATION)
    assert b.refresh() == ["p", "q"]
    heard = []
    b.add_listener(lambda product_id, product: heard.append(product_id))
    restore = breakage(b.root, monkeypatch)
    for _ in range(3):  # polls while it stays lost
        assert b.refresh() == []
    assert [b.get(i).product_id for i in ("p", "q")] == ["p", "q"] and len(b) == 2 and heard == []
    assert b.unavailable_reason is not None
    assert f"the product store {b.root} is unavailable ({error}" in b.unavailable_reason
    with pytest.raises(StoreUnavailable) as raised:
        b.all()
    assert str(raised.value) == b.unavailable_reason
    with pytest.raises(StoreUnavailable):
        b.check_available()
    errors = [r for r in caplog.records if r.name == "service.products.store" and r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [b.unavailable_reason]  # once, not at every poll
    assert all(r.exc_info is None for r in errors)

    restore()
    assert b.refresh() == [] and b.unavailable_reason is None
    assert [p.product_id for p in b.all()] == ["p", "q"]
    recovered = [r.getMessage() for r in caplog.records if r.name == "service.products.store" and r.levelname == "INFO"]
    assert recovered == [f"the product store {b.root} is available again"]
    assert a.delete("q")  # and replicas' changes reach it again
    assert b.refresh() == ["q"] and [p.product_id for p in b.all()] == ["p"]


def test_an_empty_store_folder_is_no_products(replicas, refs):
    """Another replica deleted the last product: the folder stays, empty, and this is no outage."""
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    assert b.refresh() == ["p"]
    assert a.delete("p")
    assert b.refresh() == ["p"] and b.get("p") is None and len(b) == 0
    assert b.unavailable_reason is None and b.all() == []


def test_a_store_folder_lost_during_a_poll_drops_nothing(replicas, refs, monkeypatch):
    """The folder goes away after the listing (which then looks empty): the products are kept all the same."""
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    assert b.refresh() == ["p"]
    scandir = os.scandir

    class EmptyThenLost:
        def __init__(self, path):
            self.entries = scandir(path)

        def __enter__(self):
            self.entries.close()
            b.root.rename(b.root.with_name("products.bak"))
            return iter(())

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(service.products.store.os, "scandir", EmptyThenLost)
    assert b.refresh() == []
    assert b.get("p") is not None and b.unavailable_reason is not None

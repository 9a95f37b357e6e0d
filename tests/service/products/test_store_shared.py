"""Product store under races and shared by replicas: two ProductStore objects on one database and one blob folder
stand for two processes, on SQLite and on PostgreSQL (the real multi-process case is tests/e2e/test_replicas.py)."""

from __future__ import annotations

import logging
import os
import threading

import pytest
from sqlalchemy import select

import service.products.store
from service.products.frames import FrameStore, new_frame
from service.products.store import StoreConflict, StoreUnavailable
from service.records.tables import labelled_frames, product_versions, products
from tests.helpers.apps import STORE_CALIBRATION, upload
from tests.helpers.images import image_bytes

CALIBRATION = STORE_CALIBRATION


def rows(store, table, product_id: str) -> int:
    query = select(table).where(table.c.product_id == product_id)
    return store.read(lambda c: len(c.execute(query).all()))


def test_another_replicas_product_is_read_from_the_database_before_none(replicas, refs):
    a, b = replicas
    written = a.commit("p", refs, CALIBRATION)
    found = b.get("p")
    assert found is not None and (found.version, found.uid) == (written.version, written.uid)
    assert b.get("unknown") is None


def test_refresh_notices_new_versions_thresholds_rules_and_deletes(replicas, refs):
    from service.decisions.rules import AcceptanceRules

    a, b = replicas
    heard = []
    b.add_listener(lambda product_id, product: heard.append((product_id, product and product.generation)))
    first = a.commit("p", refs, CALIBRATION)
    assert b.refresh() == ["p"] and b.get("p").uid == first.uid
    assert b.refresh() == [] and b.refresh("p") == []  # nothing changed: nothing re-read
    second = a.commit("p", refs, CALIBRATION)
    assert b.refresh("p") == ["p"]  # one product, as a notification names it
    assert (b.get("p").version, b.get("p").uid) == (2, second.uid)
    refs_before = b.get("p").refs
    a.set_thresholds("p", 0.9, None)
    b.refresh()
    assert b.get("p").threshold == 0.9 and b.get("p").refs is refs_before  # same version: the blob not re-read
    a.set_rules("p", AcceptanceRules(max_regions=3))
    b.refresh()
    assert b.get("p").rules.max_regions == 3 and b.get("p").generation == a.get("p").generation == 4
    assert a.delete("p")
    assert b.refresh() == ["p"] and b.get("p") is None
    assert heard == [("p", 1), ("p", 2), ("p", 3), ("p", 4), ("p", None)]


def test_an_upload_begun_before_a_delete_does_not_resurrect_the_product(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    token = a.token("p")  # the upload route reads this before its fit
    assert b.delete("p")  # ... the delete happens during the fit, on any replica
    with pytest.raises(StoreConflict, match="deleted while this upload"):
        a.commit("p", refs, CALIBRATION, expected=token)
    assert a.get("p") is None and b.get("p") is None
    assert a.product_ids() == [] and rows(a, product_versions, "p") == 0


def test_a_delete_removes_versions_and_labelled_frames_in_one_go(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    a.commit("p", refs, CALIBRATION)
    frame = new_frame("good", "feedback", "2026-11-29T17:00:00Z", "a.png")
    FrameStore(a, 10, 10).add("p", [frame], {frame.frame_id: b"A"})
    assert (rows(b, product_versions, "p"), rows(b, labelled_frames, "p")) == (2, 1)
    assert b.delete("p")
    assert [rows(a, t, "p") for t in (products, product_versions, labelled_frames)] == [0, 0, 0]
    assert FrameStore(a, 10, 10).frames("p") == []
    with pytest.raises(service.products.store.ProductMissing):
        FrameStore(a, 10, 10).add("p", [frame], {frame.frame_id: b"A"})  # a label after the delete: no orphan row


def test_concurrent_uploads_one_wins_the_other_is_told(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    token_a, token_b = a.token("p"), b.token("p")
    won = b.commit("p", refs, CALIBRATION, expected=token_b)
    with pytest.raises(StoreConflict, match="version 2 was stored meanwhile"):
        a.commit("p", refs, CALIBRATION, expected=token_a)
    assert a.get("p").uid == b.get("p").uid == won.uid  # the loser learnt the winner's version at once


def test_two_first_uploads_one_wins_the_other_is_told(replicas, refs):
    a, b = replicas
    won = a.commit("p", refs, CALIBRATION, expected=None)
    with pytest.raises(StoreConflict, match="changed while this upload"):
        b.commit("p", refs, CALIBRATION, expected=None)
    assert b.get("p").uid == won.uid and a.product_ids() == ["p"]


def test_racing_writers_claim_distinct_versions_and_leave_one_consistent_product(replicas, refs, tiny_detector):
    stores = replicas * 3  # six writers: two "processes", three threads each
    results, errors, barrier = [], [], threading.Barrier(len(stores))

    def write(store):
        barrier.wait()
        try:
            results.append(store.commit("p", refs, CALIBRATION))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    versions = sorted(p.version for p in results)
    assert versions == list(range(1, len(stores) + 1))  # each claimed a number of its own
    for store in replicas:
        store.refresh()
        assert (store.get("p").version, store.get("p").uid) == (max(versions), a_token(replicas))


def a_token(replicas) -> str:
    return replicas[0].token("p")


def test_racing_compare_and_swap_uploads_one_wins_per_round(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    for _ in range(3):
        token = a.token("p")
        barrier, outcomes = threading.Barrier(2), []

        def write(store, token=token, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                outcomes.append(store.commit("p", refs, CALIBRATION, expected=token).version)
            except StoreConflict:
                outcomes.append("409")

        threads = [threading.Thread(target=write, args=(s,)) for s in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(outcomes, key=str) == sorted([a.get("p").version, "409"], key=str)


def test_garbage_collection_keeps_referenced_and_young_blobs_and_removes_old_unreferenced(replicas, refs):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    frame = new_frame("good", "feedback", "2026-11-29T17:00:00Z", "a.png")
    FrameStore(a, 10, 10).add("p", [frame], {frame.frame_id: b"labelled"})
    in_flight = a.blobs.put(b"another replica's bank, its row not committed yet")
    orphan = a.blobs.put(b"a bank whose product was deleted")
    old = os.path.getmtime(a.blobs.path(orphan)) - 3600
    os.utime(a.blobs.path(orphan), (old, old))
    referenced = {sha for sha, _ in a.blobs.listing()} - {in_flight, orphan}
    for sha in referenced:
        os.utime(a.blobs.path(sha), (old, old))
    assert b.collect_garbage(grace_s=600) == 1
    assert {sha for sha, _ in a.blobs.listing()} == referenced | {in_flight}
    assert a.blobs.put(b"a bank whose product was deleted") == orphan  # written again: young, so kept
    assert b.collect_garbage(grace_s=600) == 0 and a.blobs.has(orphan)


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


def test_api_writes_while_the_database_is_down_are_503_and_inspections_go_on(client, monkeypatch):
    import sqlite3

    assert upload(client, "p", image_bytes(seed=1)).status_code == 201
    store = client.app.state.services.store

    def refused(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    store.engine.dispose()
    monkeypatch.setattr(store.engine.dialect, "connect", refused)
    writes = {
        "upload": upload(client, "p", image_bytes(seed=2)),
        "threshold": client.put("/products/p/threshold", json={"threshold": 0.5}),
        "delete": client.delete("/products/p"),
        "list": client.get("/products"),
    }
    for route, answer in writes.items():
        assert answer.status_code == 503, (route, answer.text)
        assert "the product registry (records database) does not answer" in answer.json()["detail"], route
    inspected = client.post("/inspect", data={"product_id": "p"}, files=[("images", ("f.png", image_bytes(), "x"))])
    assert inspected.status_code == 200, inspected.text
    monkeypatch.undo()
    assert client.put("/products/p/threshold", json={"threshold": 0.5}).status_code == 200


def test_two_replicas_labelling_one_product_at_once_keep_both_labels(replicas, refs, monkeypatch):
    """Replica A has read the labelled frames inside its transaction and not yet written them when replica B adds
    its label: B waits for the product's row and appends to what A wrote, never over it."""
    replicas[0].commit("widget", refs, CALIBRATION)
    replica_a, replica_b = (FrameStore(store, 10, 10) for store in replicas)
    label_a = new_frame("good", "feedback", "2026-11-29T17:00:00Z", "a.png")
    label_b = new_frame("defect", "feedback", "2026-11-29T17:00:00Z", "b.png")
    a_has_read, a_may_write = threading.Event(), threading.Event()
    stored = service.products.frames._stored

    def a_pauses_after_reading(c, product_id):
        frames = stored(c, product_id)
        if threading.current_thread().name == "A" and not a_has_read.is_set():
            a_has_read.set()
            a_may_write.wait(30)
        return frames

    monkeypatch.setattr(service.products.frames, "_stored", a_pauses_after_reading)
    a = threading.Thread(target=replica_a.add, args=("widget", [label_a], {label_a.frame_id: b"A"}), name="A")
    a.start()
    assert a_has_read.wait(30)
    b = threading.Thread(target=replica_b.add, args=("widget", [label_b], {label_b.frame_id: b"B"}), name="B")
    b.start()
    b.join(1.0)  # without the row held, B has written by now
    a_may_write.set()
    a.join(30)
    b.join(30)
    kept = replica_b.frames("widget")
    assert {f.frame_id for f in kept} == {label_a.frame_id, label_b.frame_id}
    assert {replica_b.image_bytes("widget", f) for f in kept} == {b"A", b"B"}


# --- a lost blob folder ------------------------------------------------------------------------------------


def not_a_directory(root, monkeypatch):
    """A lost mount: the folder moved away and a file in its place."""
    root.rename(root.with_name("blobs.bak"))
    root.touch()

    def restore():
        root.unlink()
        root.with_name("blobs.bak").rename(root)

    return restore


def missing(root, monkeypatch):
    root.rename(root.with_name("blobs.bak"))
    return lambda: root.with_name("blobs.bak").rename(root)


def unreadable(root, monkeypatch):
    """EACCES on opening (a chmod would not do: the tests may run as root)."""
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(root):
            raise PermissionError(13, "Permission denied", os.fspath(root))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(service.products.store.os, "open", refuse)
    return monkeypatch.undo


@pytest.mark.parametrize(
    ("breakage", "error"),
    [(not_a_directory, "NotADirectoryError"), (missing, "FileNotFoundError"), (unreadable, "PermissionError")],
)
def test_a_lost_blob_folder_keeps_every_product_until_it_is_back(replicas, refs, caplog, monkeypatch, breakage, error):
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
    assert f"the product store {b.root} is unavailable ({error}" in b.unavailable_reason
    with pytest.raises(StoreUnavailable) as raised:
        b.all()
    assert str(raised.value) == b.unavailable_reason
    errors = [r for r in caplog.records if r.name == "service.products.store" and r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [b.unavailable_reason]  # once, not at every poll
    restore()
    assert b.refresh() == [] and b.unavailable_reason is None
    assert [p.product_id for p in b.all()] == ["p", "q"]
    assert a.delete("q")  # and replicas' changes reach it again
    assert b.refresh() == ["q"] and [p.product_id for p in b.all()] == ["p"]


def test_a_new_version_whose_blob_another_replica_cannot_read_yet_is_a_503_not_a_404(replicas, refs, monkeypatch):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    restore = missing(b.root, monkeypatch)
    with pytest.raises(StoreUnavailable):
        b.get("p")
    restore()
    assert b.get("p").uid == a.get("p").uid


def test_a_commit_that_hears_of_a_later_one_before_installing_its_own_keeps_the_later(replicas, refs, monkeypatch):
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    write = a._write_retried

    def then_b_commits_and_a_hears_of_it(*args, **kwargs):
        row = write(*args, **kwargs)
        b.commit("p", refs, CALIBRATION)  # between a's transaction and a's install
        a.refresh("p")  # the change feed's call
        return row

    monkeypatch.setattr(a, "_write_retried", then_b_commits_and_a_hears_of_it)
    assert a.commit("p", refs, CALIBRATION).version == 2
    assert a.get("p").version == 3 and a.get("p").uid == b.get("p").uid


def test_the_collector_thread_removes_old_unreferenced_blobs_by_itself(replicas, refs):
    from service.products.collector import BlobCollector
    from tests.helpers.waiting import wait_for

    a, _ = replicas
    a.commit("p", refs, CALIBRATION)
    kept = {sha for sha, _ in a.blobs.listing()}
    orphan = a.blobs.put(b"a bank whose product was deleted")
    collector = BlobCollector(a, grace_s=0.0, interval_s=0.05)
    collector.start()
    try:
        wait_for(lambda: not a.blobs.has(orphan), "the collector to remove the unreferenced blob")
    finally:
        collector.stop()
    assert {sha for sha, _ in a.blobs.listing()} == kept  # the version's bank stays


def test_a_delete_while_another_replica_labels_leaves_no_labelled_frame_behind(replicas, refs, monkeypatch):
    """Replica A holds the product's row in its label transaction when B deletes the product: B waits, then removes
    A's new rows too (a product created again later under the id must not inherit them)."""
    a, b = replicas
    a.commit("p", refs, CALIBRATION)
    label = new_frame("good", "feedback", "2026-11-29T17:00:00Z", "a.png")
    a_has_read, a_may_write = threading.Event(), threading.Event()
    stored = service.products.frames._stored

    def a_pauses_after_reading(c, product_id):
        frames = stored(c, product_id)
        if threading.current_thread().name == "A":
            a_has_read.set()
            a_may_write.wait(30)
        return frames

    monkeypatch.setattr(service.products.frames, "_stored", a_pauses_after_reading)
    arguments = ("p", [label], {label.frame_id: b"A"})
    labelling = threading.Thread(target=FrameStore(a, 10, 10).add, args=arguments, name="A")
    labelling.start()
    assert a_has_read.wait(30)
    deleted = []
    deleting = threading.Thread(target=lambda: deleted.append(b.delete("p")))
    deleting.start()
    deleting.join(1.0)  # B waits for A's transaction
    a_may_write.set()
    labelling.join(30)
    deleting.join(30)
    assert deleted == [True]
    assert [rows(a, t, "p") for t in (products, product_versions, labelled_frames)] == [0, 0, 0]

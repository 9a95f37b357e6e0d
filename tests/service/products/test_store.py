"""Product store on SQLite: versions as rows, banks as blobs, restart reload, unreadable products, failed writes, the
database down, the import of the old folder store."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from service.errors import Unavailable
from service.products.frames import FrameStore
from service.products.importer import import_folder_store
from service.products.store import StoreError, bank_blob, is_valid_product_id
from service.records.tables import product_versions
from tests.helpers.apps import STORE_CALIBRATION, running_app, tiny_settings
from tests.helpers.images import image_bytes
from tests.helpers.registry import open_registry

CALIBRATION = STORE_CALIBRATION


@pytest.fixture
def store(tmp_path, tiny_detector):
    return open_registry(tmp_path, load_references=tiny_detector.load_references)


def reopened(store, detector):
    """What a restarted replica sees."""
    return open_registry(store.root.parent, load_references=detector.load_references)


def versions(store, product_id: str) -> list[int]:
    query = select(product_versions.c.version).where(product_versions.c.product_id == product_id)
    return store.read(lambda c: sorted(c.execute(query).scalars()))


def test_commit_stores_a_version_row_and_one_bank_blob(store, refs):
    product = store.commit("widget-1", refs, CALIBRATION)
    assert (product.version, product.generation) == (1, 1)
    assert versions(store, "widget-1") == [1]
    assert [sha for sha, _ in store.blobs.listing()] == [store.blobs.put(bank_blob(refs))]
    assert product.threshold == 0.5 and product.pixel_threshold == 0.6


def test_new_versions_keep_the_current_row_and_the_one_before(store, refs):
    for expected in (1, 2, 3):
        assert store.commit("widget", refs, CALIBRATION).version == expected
    assert versions(store, "widget") == [2, 3]
    assert store.get("widget").version == 3


def test_restart_reloads_every_product_with_its_overrides_and_rules(store, refs, tiny_detector):
    from service.decisions.rules import AcceptanceRules

    store.commit("a", refs, CALIBRATION)
    store.commit("b", refs, CALIBRATION)
    store.set_thresholds("b", 0.9, None)
    store.set_rules("a", AcceptanceRules(max_regions=3))
    fresh = reopened(store, tiny_detector)
    assert [p.product_id for p in fresh.all()] == ["a", "b"]
    assert fresh.get("b").threshold == 0.9
    assert fresh.get("b").pixel_threshold == 0.6  # not overridden: calibrated
    assert (fresh.get("a").rules.max_regions, fresh.get("a").rules_version) == (3, 1)
    assert fresh.get("a").refs.bank_size == refs.bank_size
    assert fresh.get("a").created_at == store.get("a").created_at


def test_a_new_upload_resets_threshold_overrides_and_recalibration_but_keeps_rules(store, refs):
    from service.decisions.rules import AcceptanceRules

    first = store.commit("a", refs, CALIBRATION)
    store.set_thresholds("a", 0.9, 0.8)
    store.set_rules("a", AcceptanceRules(max_regions=3))
    recalibrated = CALIBRATION.from_dict({**CALIBRATION.to_dict(), "threshold": 0.7})
    assert store.set_recalibration("a", first.uid, recalibrated).calibration.threshold == 0.7
    second = store.commit("a", refs, CALIBRATION)
    assert (second.threshold, second.pixel_threshold, second.rules.max_regions) == (0.5, 0.6, 3)
    assert store.set_recalibration("a", first.uid, recalibrated).uid == second.uid  # for the old version: refused
    assert store.get("a").calibration.threshold == 0.5


@pytest.fixture
def other_refs(tiny_detector):
    """References other than `refs`: another bank blob."""
    images = [Image.open(io.BytesIO(image_bytes(40, 32, seed=s))).convert("RGB") for s in (5, 6)]
    return tiny_detector.fit_references(images)


def bank_of(store, product_id: str) -> str:
    query = select(product_versions.c.bank_sha256).where(product_versions.c.product_id == product_id)
    return store.read(lambda c: c.execute(query).scalar())


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_product_whose_bank_blob_is_damaged_is_skipped_logged_once_and_kept(
    store, refs, other_refs, tiny_detector, caplog, damage
):
    store.commit("good", refs, CALIBRATION)
    store.commit("broken", other_refs, CALIBRATION)
    path = store.blobs.path(bank_of(store, "broken"))
    path.write_bytes(b"not a bank") if damage == "changed" else path.unlink()
    fresh = reopened(store, tiny_detector)
    for _ in range(3):
        assert [p.product_id for p in fresh.all()] == ["good"]
    assert fresh.get("broken") is None
    errors = [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
    assert len(errors) == 1 and "'broken'" in errors[0]
    assert fresh.product_ids() == ["broken", "good"]  # its rows are kept for a person to look at


def test_delete_removes_the_rows_and_the_garbage_collector_the_blob(store, refs):
    store.commit("a", refs, CALIBRATION)
    assert store.delete("a")
    assert store.get("a") is None and store.product_ids() == [] and versions(store, "a") == []
    assert not store.delete("a")
    assert store.collect_garbage(grace_s=3600) == 0  # young: another replica may be about to name it
    assert store.collect_garbage(grace_s=0) == 1 and list(store.blobs.listing()) == []


def test_a_failed_blob_write_leaves_the_current_version_and_no_row(store, refs, monkeypatch):
    first = store.commit("a", refs, CALIBRATION)

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(store.blobs), "put", disk_full)
    with pytest.raises(StoreError, match=r"could not store product 'a'.*No space left"):
        store.commit("a", refs, CALIBRATION)
    with pytest.raises(StoreError, match="No space left"):
        store.commit("new", refs, CALIBRATION)
    assert store.get("a") is first and versions(store, "a") == [1] and store.product_ids() == ["a"]


def broken_connect(*args, **kwargs):
    raise sqlite3.OperationalError("unable to open database file")


def test_the_database_down_refuses_writes_with_503_and_serves_what_is_loaded(store, refs, monkeypatch):
    loaded = store.commit("a", refs, CALIBRATION)
    store.engine.dispose()
    monkeypatch.setattr(store.engine.dialect, "connect", broken_connect)
    calls = {
        "commit": lambda: store.commit("a", refs, CALIBRATION, expected=loaded.uid),
        "thresholds": lambda: store.set_thresholds("a", 0.9, None),
        "delete": lambda: store.delete("a"),
        "token": lambda: store.token("a"),
        "all": store.all,
        "unknown": lambda: store.get("unknown"),
    }
    for name, call in calls.items():
        with pytest.raises(Unavailable, match=r"the product registry .* does not answer"):
            call()
            pytest.fail(name)
    assert store.get("a") is loaded  # inspections go on with what is in memory
    store.refresh_one_or_all(None)  # the change feed's call: recorded, not raised
    assert "unable to open database file" in store.database_error
    monkeypatch.undo()
    assert store.set_thresholds("a", 0.9, None).threshold == 0.9 and store.database_error is None


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "-a", ".hidden", "a b", "x" * 65, "é"])
def test_invalid_product_ids_are_refused(store, refs, bad):
    assert not is_valid_product_id(bad)
    with pytest.raises(ValueError, match="invalid product id"):
        store.commit(bad, refs, CALIBRATION)
    assert list(store.blobs.listing()) == []


@pytest.mark.parametrize("good", ["a", "A1", "bottle_2024.v3", "x" * 64, "0-0"])
def test_valid_product_ids(good):
    assert is_valid_product_id(good)


# --- the old folder store ----------------------------------------------------------------------------------


def old_product(products_dir, product_id: str, refs, **extra) -> None:
    """A product folder as the folder store wrote it: pointer, version folder, and the files `extra` names
    (`frames__index__json` is frames/index.json)."""
    folder = products_dir / product_id
    refs.save(folder / "v3")
    meta = {"product_id": product_id, "uid": "u3", "created_at": "2026-01-02T03:04:05+00:00"}
    (folder / "v3" / "product.json").write_text(json.dumps({**meta, "calibration": CALIBRATION.to_dict()}))
    pointer = {"version": 3, "uid": "u3", "generation": 7, "threshold": 0.8, "pixel_threshold": None}
    (folder / "current.json").write_text(json.dumps(pointer))
    for name, content in extra.items():
        *parts, stem, suffix = name.split("__")
        path = folder.joinpath(*parts, f"{stem}.{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())


def test_the_old_folder_store_is_imported_once_and_left_untouched(store, refs, tiny_detector, caplog):
    caplog.set_level(logging.INFO)
    data_dir = store.root.parent
    old = data_dir / "products"
    frame = {"frame_id": "f1", "label": "defect", "source": "feedback", "time": "2026-01-02T03:04:05+00:00",
             "filename": "x.png", "inspection_id": None, "score": 1.5, "map_max": 1.7, "version": 3}  # fmt: skip
    recalibrated = {**CALIBRATION.to_dict(), "threshold": 0.45}
    old_product(
        old,
        "bottle",
        refs,
        rules__json={"rules": {"max_regions": 2}, "rules_version": 4},
        calibration__json={"uid": "u3", "calibration": recalibrated},
        frames__index__json={"frames": [frame]},
        frames__f1__img=b"frame bytes",
    )
    old_product(old, "cap", refs)
    (old / "half").mkdir()  # a first upload that never got its pointer: not a product
    before = sorted((str(p), p.stat().st_mtime_ns) for p in old.rglob("*"))
    assert import_folder_store(store, data_dir) == (2, 0, 0)
    fresh = reopened(store, tiny_detector)
    bottle = fresh.get("bottle")
    assert (bottle.version, bottle.uid, bottle.threshold_override) == (3, "u3", 0.8)
    assert (bottle.rules.max_regions, bottle.rules_version, bottle.calibration.threshold) == (2, 4, 0.45)
    assert bottle.created_at == "2026-01-02T03:04:05+00:00" and bottle.refs.bank_size == refs.bank_size
    frames = FrameStore(fresh, 10, 10)
    assert [(f.frame_id, f.score, f.version) for f in frames.frames("bottle")] == [("f1", 1.5, 3)]
    assert frames.image_bytes("bottle", frames.frames("bottle")[0]) == b"frame bytes"
    assert fresh.get("cap").calibration.threshold == 0.5
    assert sorted((str(p), p.stat().st_mtime_ns) for p in old.rglob("*")) == before  # read only
    assert fresh.delete("cap")
    assert import_folder_store(fresh, data_dir) == (0, 2, 0)  # imported once: a deleted product stays deleted
    assert fresh.product_ids() == ["bottle"]
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("old product store")]
    assert summaries[0].endswith("2 product(s) imported, 0 skipped (imported before or in the registry), 0 failed")


def test_an_old_product_that_cannot_be_read_is_logged_and_the_rest_imported(store, refs):
    old = store.root.parent / "products"
    old_product(old, "good", refs)
    old_product(old, "broken", refs)
    shutil.rmtree(old / "broken" / "v3")
    assert import_folder_store(store, old.parent) == (1, 0, 1)
    assert store.product_ids() == ["good"]
    assert import_folder_store(store, old.parent) == (0, 1, 1)  # tried again at the next start


FIXTURE = Path(__file__).parents[2] / "fixtures" / "folder-store-v1"


def test_a_service_imports_the_folder_store_fixture_at_its_first_start(tmp_path, caplog):
    """The fixture written through the API by the folder store (tests/fixtures/make_folder_store.py)."""
    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE, data_dir)
    with running_app(tiny_settings(data_dir)) as client:
        bottle = client.get("/products/bottle").json()
        assert (bottle["version"], bottle["threshold"], bottle["pixel_threshold"]) == (2, 0.9, 0.95)
        rules = client.get("/products/bottle/rules").json()
        assert (rules["rules_version"], rules["rules"]["max_regions"], rules["rules"]["min_area_px"]) == (2, 1, 4)
        evaluation = client.get("/products/bottle/evaluation").json()
        assert (evaluation["n_defect"], evaluation["n_good"]) == (1, 1)
        frames = client.app.state.services.workflows.frames
        assert [(f.label, f.source) for f in frames.frames("bottle")] == [
            ("good", "calibration"),
            ("good", "calibration"),
            ("defect", "feedback"),
            ("good", "feedback"),
        ]
        caps = client.get("/products/caps").json()
        assert caps["version"] == 2 and client.get("/products/caps/rules").json()["rules_version"] == 2
        assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["bottle", "caps", "screws"]
        assert client.delete("/products/screws").status_code == 204
    with running_app(tiny_settings(data_dir)) as client:  # a restart imports nothing again
        assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["bottle", "caps"]
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("old product store")]
    assert summaries[0].endswith("3 product(s) imported, 0 skipped (imported before or in the registry), 0 failed")
    assert summaries[1].endswith("0 product(s) imported, 3 skipped (imported before or in the registry), 0 failed")
    assert not any(p.name == "blobs" for p in (data_dir / "products").iterdir())

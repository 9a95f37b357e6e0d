"""Product ids that differ only by case are one product on a case-insensitive volume (SMB, NAS) and two on ext4: a
new id that case-folds to an existing one is refused (409 naming it) on every volume, and reads by another case
find nothing on every volume."""

from __future__ import annotations

import os

import pytest

from service.products.store import ProductStore, StoreConflict
from tests.helpers.apps import STORE_CALIBRATION, upload
from tests.helpers.images import image_bytes


@pytest.mark.parametrize("twin", ["bottle", "BOTTLE", "bOTTLe"])
def test_a_new_id_differing_only_by_case_is_a_409_naming_the_existing_one(client, tmp_path, twin):
    assert upload(client, "Bottle", image_bytes()).status_code == 201
    answer = upload(client, twin, image_bytes(seed=1))
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith("product 'Bottle' exists") and "use 'Bottle'" in answer.json()["detail"]
    assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["Bottle"]
    assert sorted(os.listdir(tmp_path / "data" / "products")) == ["Bottle"]  # nothing left by the refused one
    assert upload(client, "Bottle", image_bytes(seed=2)).json()["version"] == 2  # the product itself still takes it


def test_the_store_refuses_a_case_twin_even_past_the_workflow(tmp_path, refs):
    store = ProductStore(tmp_path / "products")
    store.commit("Bottle", refs, STORE_CALIBRATION)
    with pytest.raises(StoreConflict, match="product 'Bottle' exists"):
        store.commit("bottle", refs, STORE_CALIBRATION, expected=None)
    assert sorted(os.listdir(store.root)) == ["Bottle"]


@pytest.fixture
def case_insensitive_volume(monkeypatch, tmp_path):
    """The products folder behaves as on SMB or a NAS: `bottle/` opens `Bottle/` (a symbolic link here), and a
    listing shows only the name the folder was created with (links hidden)."""
    listdir = os.listdir

    def listed(path="."):
        return [n for n in listdir(path) if not os.path.islink(os.path.join(path, n))]

    monkeypatch.setattr(os, "listdir", listed)
    return lambda name, target: os.symlink(target, tmp_path / "data" / "products" / name)


def test_on_a_case_insensitive_volume_a_case_twin_is_refused_not_overwriting(client, case_insensitive_volume):
    assert upload(client, "Bottle", image_bytes()).status_code == 201
    case_insensitive_volume("bottle", "Bottle")
    answer = upload(client, "bottle", image_bytes(seed=1))  # would have replaced Bottle's version
    assert answer.status_code == 409 and "product 'Bottle' exists" in answer.json()["detail"]
    assert client.get("/products/Bottle").json()["version"] == 1
    assert client.get("/products/bottle").status_code == 404  # as on ext4
    assert client.put("/products/bottle/threshold", json={"threshold": 0.1}).status_code == 404
    assert client.delete("/products/bottle").status_code == 404
    assert client.get("/products/Bottle").status_code == 200

"""Product ids that differ only by case would be one product on a case-insensitive volume (SMB, NAS) and two
products an operator cannot tell apart: a new id that lower-cases to an existing one is refused (409 naming it), by
the registry's unique key even when two replicas race, and reads by another case find nothing."""

from __future__ import annotations

import pytest

from service.products.store import ANY, ProductStore, StoreConflict
from tests.helpers.apps import STORE_CALIBRATION, upload
from tests.helpers.images import image_bytes
from tests.helpers.registry import open_registry


@pytest.mark.parametrize("twin", ["bottle", "BOTTLE", "bOTTLe"])
def test_a_new_id_differing_only_by_case_is_a_409_naming_the_existing_one(client, tmp_path, twin):
    assert upload(client, "Bottle", image_bytes()).status_code == 201
    answer = upload(client, twin, image_bytes(seed=1))
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith("product 'Bottle' exists") and "use 'Bottle'" in answer.json()["detail"]
    assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["Bottle"]
    assert client.app.state.services.store.product_ids() == ["Bottle"]  # nothing left by the refused one
    assert upload(client, "Bottle", image_bytes(seed=2)).json()["version"] == 2  # the product itself still takes it


@pytest.mark.parametrize("twin", ["bottle", "BOTTLE"])
def test_the_store_refuses_a_case_twin_even_past_the_workflow(tmp_path, refs, twin):
    store = open_registry(tmp_path)
    store.commit("Bottle", refs, STORE_CALIBRATION)
    for expected in (None, ANY):  # a first upload, and a write without compare-and-swap
        with pytest.raises(StoreConflict, match="product 'Bottle' exists"):
            store.commit(twin, refs, STORE_CALIBRATION, expected=expected)
    assert store.product_ids() == ["Bottle"]


def test_a_case_twin_committed_by_another_replica_past_the_check_is_refused_by_the_database(tmp_path, refs):
    """The unique key on the lower-cased id decides when two replicas pass the twin check at the same moment."""
    a, b = open_registry(tmp_path), open_registry(tmp_path)
    a.commit("Bottle", refs, STORE_CALIBRATION, expected=None)
    checks = iter([None])  # b's check ran before a's commit; later looks see the truth
    b._twin = lambda c, product_id: next(checks, ProductStore._twin(c, product_id))
    with pytest.raises(StoreConflict, match="product 'Bottle' exists"):
        b.commit("bottle", refs, STORE_CALIBRATION, expected=None)
    assert b.product_ids() == ["Bottle"]


def test_reads_by_another_case_find_nothing(client):
    assert upload(client, "Bottle", image_bytes()).status_code == 201
    assert client.get("/products/bottle").status_code == 404
    assert client.put("/products/bottle/threshold", json={"threshold": 0.1}).status_code == 404
    assert client.delete("/products/bottle").status_code == 404
    assert client.get("/products/Bottle").json()["version"] == 1

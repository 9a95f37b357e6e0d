"""ServiceProcesss: three `python -m service` processes on loopback sharing one data dir (the blobs; tiny config,
0.2 s poll) and one database (the product registry and the records: a real PostgreSQL server; skipped when
PostgreSQL is not installed)."""

from __future__ import annotations

import contextlib
import io
import signal
import threading
import time

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from service.records.tables import product_versions
from tests.helpers.apps import STORE_CALIBRATION, files
from tests.helpers.images import image_bytes
from tests.helpers.processes import ServiceProcess, start_service
from tests.helpers.registry import open_registry
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

REFERENCES = [image_bytes(seed=s) for s in range(2)]
FRAME = image_bytes(seed=7)
N_STORED = 100
CALIBRATION = STORE_CALIBRATION
POLL_S = 0.2  # DCPSFR_STORE_POLL_S of the replicas in these tests
SETTLE_TIMEOUT_S = 60  # generous bound for "within the poll interval" on a busy 2-core machine


def seconds_until(condition, what: str) -> float:
    """Seconds until `condition()` holds (see wait_for)."""
    start = time.monotonic()
    wait_for(condition, what, SETTLE_TIMEOUT_S)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def database_url(request) -> str:
    """A fresh PostgreSQL database on the session's server (replicas share the registry through it: SQLite tells no
    other process of a change); skipped without PostgreSQL."""
    from tests.helpers.postgres import postgres_bin

    if postgres_bin() is None:
        pytest.skip("replicas need PostgreSQL, which is not installed")
    return request.getfixturevalue("postgres_server").new_database("replicas")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_detector, database_url):
    """The shared data dir and database, holding 100 products before any replica starts (one fitted; one bank blob)."""
    data = tmp_path_factory.mktemp("shared") / "data"
    store = open_registry(data, database_url)
    refs = tiny_detector.fit_references([Image.open(io.BytesIO(payload)).convert("RGB") for payload in REFERENCES])
    for i in range(N_STORED):
        store.commit(f"p{i:03d}", refs, CALIBRATION)
    store.engine.dispose()
    return data


@pytest.fixture(scope="module")
def trio(data_dir, database_url):
    """ServiceProcesss A, B, C started side by side. The last two tests end C (SIGKILL) and B (SIGTERM)."""
    env = {"DCPSFR_DATA_DIR": str(data_dir), "DCPSFR_STORE_POLL_S": str(POLL_S), "DCPSFR_DATABASE_URL": database_url}
    replicas = [start_service(data_dir.parent, env, name=name) for name in "ABC"]
    try:
        for replica in replicas:
            replica.wait_ready()
        yield replicas
    finally:
        codes = {r.name: r.stop() for r in replicas}
        assert codes["A"] == 0 and codes["B"] == 0, [r.log_tail() for r in replicas]
        assert codes["C"] in (0, -signal.SIGKILL)


def upload(replica: ServiceProcess, product_id: str, *payloads: bytes) -> httpx.Response:
    return replica.client.post(f"/products/{product_id}/references", files=files(*payloads or REFERENCES))


def inspect(replica: ServiceProcess, product_id: str) -> httpx.Response:
    return replica.client.post("/inspect", data={"product_id": product_id}, files=files(FRAME))


def shown(replica: ServiceProcess, product_id: str) -> tuple[int, int | None, str | None]:
    """(status, version, created_at) of GET /products/{id}."""
    answer = replica.client.get(f"/products/{product_id}")
    return answer.status_code, answer.json().get("version"), answer.json().get("created_at")


def test_upload_on_a_is_served_by_b_and_c_with_the_same_version(trio):
    a, b, c = trio
    answer = upload(a, "p")
    assert answer.status_code == 201, answer.text
    version = answer.json()["version"]
    for other in (b, c):  # unknown locally: the store is checked before a 404
        result = inspect(other, "p")
        assert result.status_code == 200, result.text
        assert result.json()["reference_version"] == version
    scores = {r.name: inspect(r, "p").json()["results"][0]["score"] for r in trio}
    assert scores["A"] == pytest.approx(scores["B"]) == pytest.approx(scores["C"])


def test_replace_on_b_while_a_and_c_inspect_without_error(trio):
    a, b, c = trio
    old = upload(a, "r").json()["version"]
    for replica in trio:
        assert inspect(replica, "r").json()["reference_version"] == old
    stop, seen = threading.Event(), {"A": [], "C": []}

    def keep_inspecting(replica: ServiceProcess) -> None:
        while not stop.is_set():
            answer = inspect(replica, "r")
            seen[replica.name].append((answer.status_code, answer.json().get("reference_version")))

    threads = [threading.Thread(target=keep_inspecting, args=(r,)) for r in (a, c)]
    for thread in threads:
        thread.start()
    try:
        replaced = upload(b, "r", image_bytes(seed=3), image_bytes(seed=4))
        assert replaced.status_code == 201, replaced.text
        new = replaced.json()["version"]
        took = [seconds_until(lambda r=r: shown(r, "r")[1] == new, f"{r.name} serves v{new}") for r in (a, c)]
        print(f"\nnew version reached the other replicas in {max(took):.2f} s (poll {POLL_S} s)")
        seconds_until(lambda: all(s[-1][1] == new for s in seen.values() if s), "inspections on the new version")
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    for name, answers in seen.items():
        assert answers and all(status == 200 for status, _ in answers), (name, answers)
        versions = [v for _, v in answers]
        assert versions == sorted(versions) and set(versions) <= {old, new}, (name, versions)


def test_threshold_change_on_a_reaches_b(trio):
    a, b, _ = trio
    assert upload(a, "t").status_code == 201
    assert a.client.put("/products/t/threshold", json={"threshold": 1.25}).status_code == 200
    seconds_until(lambda: b.client.get("/products/t").json()["threshold"] == 1.25, "B has the new threshold")
    assert inspect(b, "t").json()["results"][0]["threshold"] == 1.25


def test_delete_on_c_then_a_and_b_answer_404(trio):
    a, b, c = trio
    assert upload(a, "d").status_code == 201
    for replica in trio:
        assert inspect(replica, "d").status_code == 200  # every replica has it in memory
    assert c.client.delete("/products/d").status_code == 204
    for replica in (a, b):
        seconds_until(lambda r=replica: inspect(r, "d").status_code == 404, f"{replica.name} answers 404")
        assert replica.client.get("/products/d").status_code == 404
        assert "d" not in [p["product_id"] for p in replica.client.get("/products").json()["products"]]


def test_two_uploads_at_once_on_a_and_b_end_in_one_consistent_version(trio, data_dir, database_url):
    a, b, _ = trio
    barrier, answers = threading.Barrier(2), {}

    def race(replica: ServiceProcess, seed: int) -> None:
        barrier.wait()
        answers[replica.name] = upload(replica, "q", image_bytes(seed=seed), image_bytes(seed=seed + 1))

    threads = [threading.Thread(target=race, args=(r, s)) for r, s in ((a, 10), (b, 20))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses in ([201, 201], [201, 409]), {k: v.text for k, v in answers.items()}
    winners = [answer.json() for answer in answers.values() if answer.status_code == 201]
    final = max(winners, key=lambda w: w["version"])
    for answer in answers.values():
        if answer.status_code == 409:
            assert "changed while this upload" in answer.json()["detail"]
    for replica in trio:
        seconds_until(lambda r=replica: shown(r, "q") == (200, final["version"], final["created_at"]), replica.name)
    store = open_registry(data_dir, database_url)
    query = select(product_versions.c.version).where(product_versions.c.product_id == "q")
    assert max(store.read(lambda c: list(c.execute(query).scalars()))) == final["version"]
    store.engine.dispose()


def test_a_delete_on_c_during_an_upload_on_a_never_resurrects_the_product(trio):
    """Whatever the order, the replicas agree, and the product is gone unless the upload began after the delete."""
    a, _, c = trio
    assert upload(a, "z").status_code == 201
    for replica in trio:
        assert inspect(replica, "z").status_code == 200
    big = [image_bytes(480, 480, seed=s) for s in range(8)]  # decoding and fitting these takes a while
    answers: list[httpx.Response] = []
    uploading = threading.Thread(target=lambda: answers.append(upload(a, "z", *big)))
    uploading.start()
    time.sleep(0.5)  # inside the upload
    assert c.client.delete("/products/z").status_code == 204
    uploading.join(120)
    assert answers[0].status_code in (201, 409), answers[0].text
    agreed: list[tuple] = []

    def same_everywhere() -> bool:
        states = {shown(replica, "z") for replica in trio}
        agreed[:] = list(states)
        return len(states) == 1

    seconds_until(same_everywhere, "the replicas to agree on z")
    if answers[0].status_code == 409:  # its fit began before the delete: refused, the product stays deleted
        assert "deleted while this upload" in answers[0].json()["detail"]
        assert agreed == [(404, None, None)]
    else:  # committed before the delete (then deleted), or began after it (a new product)
        created = answers[0].json()
        assert agreed[0] in ((404, None, None), (200, created["version"], created["created_at"])), agreed


def test_replicas_started_on_100_stored_products_serve_them_all(trio):
    for replica in trio:  # ready without loading them first (start-up figures: bench/replicas.py)
        assert shown(replica, "p099")[:2] == (200, 1)
        assert inspect(replica, "p042").status_code == 200
    listed = {p["product_id"] for p in trio[1].client.get("/products").json()["products"]}
    assert {f"p{i:03d}" for i in range(N_STORED)} <= listed


def test_postgresql_restarted_under_load_writes_503_inspections_served_then_recovers(trio, database_url, request):
    server = request.getfixturevalue("postgres_server")
    a, b, c = trio
    assert upload(a, "pg").status_code == 201
    for replica in trio:
        assert inspect(replica, "pg").status_code == 200  # loaded everywhere
    stop, answers = threading.Event(), []

    def keep_inspecting() -> None:
        while not stop.is_set():
            answers.append(inspect(c, "pg").status_code)

    load = threading.Thread(target=keep_inspecting)
    load.start()
    try:
        server.stop()
        try:
            threshold = a.client.put("/products/pg/threshold", json={"threshold": 1.5})
            assert threshold.status_code == 503, threshold.text
            assert "does not answer" in threshold.json()["detail"]
            assert upload(b, "pg").status_code == 503
            assert c.client.delete("/products/pg").status_code == 503
            for replica in trio:
                assert inspect(replica, "pg").status_code == 200  # served from what is loaded
        finally:
            server.start()
        seconds_until(
            lambda: a.client.put("/products/pg/threshold", json={"threshold": 1.5}).status_code == 200, "writes again"
        )
        for replica in (b, c):  # and the change reaches the others
            seconds_until(lambda r=replica: shown_threshold(r, "pg") == 1.5, f"{replica.name} has the new threshold")
    finally:
        stop.set()
        load.join(120)
    assert answers and set(answers) == {200}, answers


def shown_threshold(replica: ServiceProcess, product_id: str) -> float | None:
    return replica.client.get(f"/products/{product_id}").json().get("threshold")


def records(replica: ServiceProcess, **params) -> list[dict]:
    return replica.client.get("/inspections", params={"limit": 1000, **params}).json()["inspections"]


def test_every_replica_lists_every_inspection_and_takes_feedback_on_any(trio):
    assert upload(trio[0], "r").status_code == 201
    answered = {}
    for replica in trio:
        tags = {"product_id": "r", "station": "every", "part_id": f"SN-{replica.name}"}
        answer = replica.client.post("/inspect", data=tags, files=files(FRAME))
        answered[replica.name] = answer.json()["results"][0]["inspection_id"]
    for replica in trio:  # the others' records arrive within their flush interval
        wait_for(lambda r=replica: {i["inspection_id"] for i in records(r, station="every")} == set(answered.values()),
                 f"replica {replica.name} to list every replica's inspection", SETTLE_TIMEOUT_S)  # fmt: skip
    labelled = trio[1].client.post(
        "/products/r/feedback", data={"label": "defect", "inspection_id": answered["C"], "force": "true"}
    )
    assert labelled.status_code == 200, labelled.text  # C's frame, from the shared archive
    assert trio[0].client.get(f"/inspections/{answered['C']}").json()["label"] == "defect"
    assert trio[2].client.get(f"/inspections/{answered['A']}/frame").content == FRAME


def review_queue(replica: ServiceProcess, product_id: str) -> list[str]:
    answer = replica.client.get("/inspections/review-queue", params={"product_id": product_id})
    return [item["inspection_id"] for item in answer.json()["items"]]


def test_every_replica_sees_one_review_queue_and_a_verdict_on_any_empties_it(trio):
    a, b, c = trio
    assert upload(a, "rq").status_code == 201
    assert a.client.put("/products/rq/review-policy", json={"band": 1.0, "all_ng": True}).status_code == 200
    answer = a.client.post("/inspect", data={"product_id": "rq", "part_id": "SN-Q"}, files=files(FRAME))
    queued = answer.json()["results"][0]["inspection_id"]  # queued: A follows its own policy change at once
    for replica in trio:
        wait_for(lambda r=replica: review_queue(r, "rq") == [queued],
                 f"replica {replica.name} to list A's inspection in the review queue", SETTLE_TIMEOUT_S)  # fmt: skip
    labelled = c.client.post("/products/rq/feedback", data={"label": "defect", "inspection_id": queued})
    assert labelled.status_code == 200, labelled.text
    assert [review_queue(r, "rq") for r in trio] == [[], [], []]
    assert b.client.get(f"/inspections/{queued}").json()["review"] == "reviewed"


def test_sigkill_mid_upload_leaves_the_others_serving_and_the_store_loadable(
    trio, data_dir, database_url, tiny_detector
):
    """C is killed (SIGKILL) in the middle of an upload and a burst of inspections: the others serve on, the store
    loads, and every inspection C answered is on the record (its spool adopted by a live replica)."""
    a, b, victim = trio
    assert upload(a, "k").status_code == 201
    big = [image_bytes(480, 480, seed=s) for s in range(8)]
    thread = threading.Thread(target=lambda: _ignore_transport_errors(lambda: upload(victim, "k", *big)))
    answered: list[str] = []
    burst = threading.Thread(target=lambda: _ignore_transport_errors(lambda: _inspect_until_killed(victim, answered)))
    burst.start()
    wait_for(lambda: len(answered) >= 3, "C to answer a few inspections", SETTLE_TIMEOUT_S)
    thread.start()
    time.sleep(0.5)  # inside the upload: receiving, decoding, fitting or writing
    assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
    thread.join(120)
    burst.join(120)
    wait_for(
        lambda: set(answered) <= {i["inspection_id"] for i in records(a, station="burst")},
        "every inspection C answered before SIGKILL to be on the record",
        SETTLE_TIMEOUT_S,
    )
    for replica in (a, b):
        assert inspect(replica, "k").status_code == 200
    replaced = upload(b, "k")  # no lock or debris left in the way
    assert replaced.status_code == 201, replaced.text
    store = open_registry(data_dir, database_url, tiny_detector.load_references)  # what a restarted replica does
    assert store.get("k").version == replaced.json()["version"]
    assert len(store.all()) >= N_STORED
    store.engine.dispose()


def test_sigterm_drains_the_request_in_flight_and_exits_0(trio):
    assert upload(trio[0], "s").status_code == 201
    replica = trio[1]
    request = httpx.Request("POST", "http://x/inspect", data={"product_id": "s"}, files=files(FRAME))
    body, gate, answers = request.read(), threading.Event(), []

    def slow_body():
        yield body[:64]
        gate.wait(120)  # the request stays in flight until the test lets its body finish
        yield body[64:]

    headers = {"content-type": request.headers["content-type"]}
    url = f"http://127.0.0.1:{replica.port}/inspect"
    sender = threading.Thread(target=lambda: answers.append(httpx.post(url, content=slow_body(), headers=headers)))
    sender.start()
    try:
        seconds_until(lambda: "dcpsfr_requests_in_flight 1.0" in replica.client.get("/metrics").text, "in flight")
        replica.popen.send_signal(signal.SIGTERM)
        seconds_until(lambda: replica.client.get("/readyz").status_code == 503, "/readyz turns 503")
        assert replica.client.get("/readyz").json()["status"] == "draining"
        assert replica.client.get("/healthz").status_code == 200
        refused = inspect(replica, "s")
        assert refused.status_code == 503 and "shutting down" in refused.json()["detail"]
        assert replica.popen.poll() is None  # still waiting for the request in flight
    finally:
        gate.set()
        sender.join(120)
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["results"][0]["score"] is not None
    assert replica.popen.wait(60) == 0, replica.log.read_text()
    assert "no request in flight, shutting down" in replica.log.read_text()
    assert inspect(trio[0], "s").status_code == 200  # the others carry on


def _inspect_until_killed(replica: ServiceProcess, answered: list[str]) -> None:
    tags = {"product_id": "k", "station": "burst"}
    while True:  # ends with a transport error once the replica is killed
        response = httpx.post(f"{replica.url}/inspect", data=tags, files=files(FRAME), timeout=60)
        if response.status_code == 200:
            answered.append(response.json()["results"][0]["inspection_id"])


def _ignore_transport_errors(call) -> None:
    with contextlib.suppress(httpx.TransportError):  # the replica was killed under it: that is the point
        call()

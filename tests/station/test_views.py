"""Parts seen in several views, without a service: the combination rule, the cameras' failures named per view, a
view's service failure an ERROR with the others' evidence, and the recipes applied at changeover."""

from __future__ import annotations

import httpx
import pytest

from station.camera import CameraFailed, CameraTimeout
from station.codes import ErrorCode
from station.handshake import Handshake, ProductTable, Verdict
from station.inspector import InspectFailed, Part
from station.views import MultiViewCamera, MultiViewInspector, PartFrames, View, ViewResult, combine
from tests.station.conftest import FakeCamera

VIEWS = {"cap-2v": [View("top", "top", "cap-top"), View("side", "side", "cap-side")]}


def result(verdict: str, code: ErrorCode = ErrorCode.NONE) -> ViewResult:
    return ViewResult("v", "c", "p", verdict, code)


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        (["OK", "OK"], ("OK", ErrorCode.NONE)),
        (["OK", "NG"], ("NG", ErrorCode.NONE)),
        (["NG", "ERROR"], ("ERROR", ErrorCode.SERVICE_TIMEOUT)),  # an ERROR wins over an NG: nobody knows
        (["OK", "ERROR"], ("ERROR", ErrorCode.SERVICE_TIMEOUT)),  # never OK on some of the views
    ],
)
def test_a_part_is_ok_only_when_every_view_is(verdicts, expected):
    results = [result(v, ErrorCode.SERVICE_TIMEOUT if v == "ERROR" else ErrorCode.NONE) for v in verdicts]
    assert combine(results) == expected


def cameras(**behaviours) -> dict[str, FakeCamera]:
    return {name: FakeCamera(name, behaviours.get(name)) for name in ("top", "side")}


def raises(error):
    def behaviour(timeout_s):
        raise error

    return behaviour


def test_every_view_is_acquired_once_per_trigger():
    views = MultiViewCamera(cameras(), VIEWS, "cap-2v")
    frames = views.acquire(1.0)
    assert isinstance(frames, PartFrames) and set(frames.frames) == {"top", "side"}
    assert [camera.acquired for camera in views.cameras.values()] == [1, 1]


@pytest.mark.parametrize(
    "error, raised", [(CameraTimeout("no frame"), CameraTimeout), (CameraFailed("unplugged"), CameraFailed)]
)
def test_a_missing_view_fails_the_acquisition_naming_the_view(error, raised):
    views = MultiViewCamera(cameras(side=raises(error)), VIEWS, "cap-2v")
    with pytest.raises(raised, match=r"1 view\(s\) missing: view side: "):
        views.acquire(1.0)


def answering(verdicts: dict[str, object]) -> httpx.MockTransport:
    """The service: the view's product answers its verdict (or a status code)."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = request.content.decode(errors="replace")
        product = next(p for p in verdicts if f'name="product_id"\r\n\r\n{p}\r\n' in body)
        answer = verdicts[product]
        if isinstance(answer, int):
            return httpx.Response(answer, json={"detail": "failed"})
        anomalous = answer == "NG"
        regions = [{"x": 1, "y": 2, "width": 3, "height": 4}] if anomalous else []
        return httpx.Response(
            200,
            json={
                "results": [
                    {
                        "anomalous": anomalous,
                        "score": 0.9 if anomalous else 0.1,
                        "threshold": 0.5,
                        "n_regions": len(regions),
                        "regions": regions,
                        "inspection_id": f"i-{product}",
                    }
                ]
            },
        )

    return httpx.MockTransport(handle)


def station(verdicts: dict[str, object], **behaviours) -> Handshake:
    inspector = MultiViewInspector("http://service", None, "st", VIEWS, "top")
    for http in inspector.http.values():
        http.http = httpx.Client(base_url="http://service", transport=answering(verdicts))
    camera = MultiViewCamera(cameras(**behaviours), VIEWS, "cap-2v")
    return Handshake(camera, inspector, ProductTable({1: "cap-2v"}), 1)


def run(handshake: Handshake):
    assert handshake.trigger("P-9")
    handshake.run_next(0)
    return handshake.snapshot().last


def test_one_ng_view_makes_the_part_ng_with_each_views_regions():
    last = run(station({"cap-top": "OK", "cap-side": "NG"}))
    assert (last.verdict, last.score, last.inspection_id, last.n_regions) == (Verdict.NG, 0.9, "i-cap-side", 1)
    assert [(v["view"], v["verdict"], len(v["regions"])) for v in last.views] == [("top", "OK", 0), ("side", "NG", 1)]


def test_a_view_the_service_fails_makes_the_part_an_error_with_the_other_views_evidence():
    last = run(station({"cap-top": "NG", "cap-side": 503}))
    assert (last.verdict, last.code, last.reject) == (Verdict.ERROR, ErrorCode.SERVICE_BUSY, True)
    assert "view side" in last.message
    assert [(v["view"], v["verdict"]) for v in last.views] == [("top", "NG"), ("side", "ERROR")]


def test_a_camera_missing_its_view_is_an_error_and_nothing_is_sent():
    last = run(station({"cap-top": "OK", "cap-side": "OK"}, side=raises(CameraTimeout("no frame"))))
    assert (last.verdict, last.code) == (Verdict.ERROR, ErrorCode.CAMERA_TIMEOUT) and last.views == ()


def test_frames_acquired_for_another_part_type_are_refused():
    inspector = MultiViewInspector("http://service", None, "st", VIEWS, "top")
    frames = PartFrames("other", {})
    with pytest.raises(InspectFailed) as failed:
        inspector.inspect(frames, Part("cap-2v"), 1.0)
    assert failed.value.code == ErrorCode.CONFIGURATION


class RecipeCamera(FakeCamera):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.selected: list[str] = []

    def select_product(self, product_id: str) -> None:
        if product_id == "refused":
            raise CameraFailed("ExposureTime out of range")
        self.selected.append(product_id)


def test_a_changeover_applies_the_cameras_recipe_and_a_refused_one_fails_it():
    camera = RecipeCamera("top")
    handshake = Handshake(camera, FakeInspectorAll(), ProductTable({1: "cap", 2: "refused"}), 1)
    assert handshake.change_product(1) and handshake.run_next(0)
    assert camera.selected == ["cap"] and not handshake.snapshot().changeover_failed
    assert handshake.change_product(2) and handshake.run_next(0)
    view = handshake.snapshot()
    assert (view.active_product, view.changeover_failed) == ("cap", True)


class FakeInspectorAll:
    def check_product(self, product_id: str, timeout_s: float) -> None:
        pass

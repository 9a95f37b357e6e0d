"""The handshake with a fake camera and a fake inspector: results, errors, fail-safe, acknowledge, changeover."""

from __future__ import annotations

import json
import threading

import pytest

from station.camera import CameraFailed, CameraTimeout, Frame
from station.codes import DESCRIPTIONS, ErrorCode
from station.handshake import FailSafe, State, Verdict
from station.inspector import InspectFailed
from station.outputs import ResultsFile
from tests.station.conftest import BAD, GOOD, never_answers


def run_part(handshake, part_id=None, product_index=0):
    assert handshake.trigger(part_id, product_index)
    assert handshake.snapshot().state == State.ACQUIRING and handshake.snapshot().busy
    assert handshake.run_next(0)
    return handshake.snapshot()


def test_good_then_bad_part_with_acknowledge_and_rearm(make_station):
    handshake, _, inspector = make_station(GOOD, BAD)
    assert handshake.snapshot().ready
    view = run_part(handshake, "1001")
    assert view.state == State.RESULT_READY and not view.ready and not view.busy
    assert view.shown.verdict == Verdict.OK and view.shown.code == ErrorCode.NONE and not view.shown.reject
    assert (view.shown.part_id, view.shown.product_id, view.shown.score, view.shown.sequence) == (
        "1001",
        "bottle",
        0.25,
        1,
    )
    assert not handshake.trigger("1002"), "a trigger before the acknowledge must be refused"
    assert handshake.snapshot().refused_triggers == 1
    assert handshake.acknowledge()
    view = handshake.snapshot()
    assert view.ready and view.shown is None and view.last.verdict == Verdict.OK
    assert not handshake.acknowledge(), "nothing left to acknowledge"
    view = run_part(handshake, "1002")
    assert (view.shown.verdict, view.shown.reject, view.shown.n_regions, view.shown.sequence) == (
        Verdict.NG,
        True,
        2,
        2,
    )
    assert [part.part_id for part in inspector.parts] == ["1001", "1002"]
    assert all(part.trigger_time is not None for part in inspector.parts)


def test_without_acknowledge_the_station_is_ready_at_once_and_shows_the_result_until_the_next_trigger(make_station):
    handshake, _, _ = make_station(BAD, GOOD, acknowledge=False)
    view = run_part(handshake, "7")
    assert view.ready and view.shown.verdict == Verdict.NG
    assert handshake.trigger("8")
    assert handshake.snapshot().shown is None, "a new trigger clears the last part's outputs"
    handshake.run_next(0)
    assert handshake.snapshot().shown.verdict == Verdict.OK and handshake.snapshot().ready


@pytest.mark.parametrize(
    "camera_error, answer, code",
    [
        (CameraTimeout("no file"), None, ErrorCode.CAMERA_TIMEOUT),
        (CameraFailed("unplugged"), None, ErrorCode.CAMERA_FAILED),
        ("hang", None, ErrorCode.CAMERA_TIMEOUT),
        (None, InspectFailed(ErrorCode.SERVICE_UNREACHABLE, "refused"), ErrorCode.SERVICE_UNREACHABLE),
        (None, InspectFailed(ErrorCode.SERVICE_BUSY, "HTTP 429"), ErrorCode.SERVICE_BUSY),
        (None, InspectFailed(ErrorCode.FRAME_REJECTED, "HTTP 415"), ErrorCode.FRAME_REJECTED),
        (None, "hang", ErrorCode.SERVICE_TIMEOUT),
        (None, RuntimeError("bug"), ErrorCode.INTERNAL),
    ],
)
def test_every_failure_is_an_error_with_its_code_never_ok(make_station, release, camera_error, answer, code):
    if answer == "hang":
        answer = never_answers(release)
    handshake, camera, _ = make_station(*([answer] if answer is not None else []))
    if camera_error == "hang":
        camera.behaviour = never_answers(release)
    elif camera_error is not None:

        def fail(timeout_s):
            raise camera_error

        camera.behaviour = fail
    view = run_part(handshake, "42")
    assert view.state == State.RESULT_READY
    assert (view.shown.verdict, view.shown.code, view.shown.reject) == (Verdict.ERROR, code, True)
    assert not view.flag(Verdict.OK) and not view.flag(Verdict.NG) and view.flag(Verdict.ERROR)
    assert view.shown.score is None and view.shown.message
    assert code in DESCRIPTIONS


def test_an_unknown_product_index_is_an_error_and_the_camera_is_not_asked(make_station):
    handshake, camera, _ = make_station(GOOD)
    view = run_part(handshake, "5", product_index=9)
    assert (view.shown.verdict, view.shown.code, view.shown.product_index) == (
        Verdict.ERROR,
        ErrorCode.UNKNOWN_PRODUCT,
        9,
    )
    assert camera.acquired == 0


def test_the_hold_fail_safe_sets_error_without_reject_and_still_never_ok(make_station):
    handshake, _, _ = make_station(InspectFailed(ErrorCode.SERVICE_UNREACHABLE, "down"), fail_safe=FailSafe.HOLD)
    view = run_part(handshake)
    assert (view.shown.verdict, view.shown.reject, view.flag(Verdict.OK)) == (Verdict.ERROR, False, False)


def test_the_service_down_then_back_errors_then_answers(make_station):
    handshake, _, _ = make_station(InspectFailed(ErrorCode.SERVICE_UNREACHABLE, "refused"), GOOD)
    assert run_part(handshake).shown.code == ErrorCode.SERVICE_UNREACHABLE
    handshake.acknowledge()
    assert run_part(handshake).shown.verdict == Verdict.OK


def test_the_trigger_product_index_selects_the_product(make_station):
    handshake, _, inspector = make_station(GOOD, GOOD)
    assert run_part(handshake, "1", product_index=2).shown.product_id == "cable"
    handshake.acknowledge()
    assert run_part(handshake, "2", product_index=0).shown.product_id == "bottle"
    assert [part.product_id for part in inspector.parts] == ["cable", "bottle"]


def test_changeover_by_index_and_by_id_is_confirmed_when_active(make_station):
    handshake, _, _ = make_station(GOOD)
    assert handshake.change_product(2)
    assert handshake.snapshot().changeover_pending and handshake.snapshot().active_product == "bottle"
    handshake.run_next(0)
    view = handshake.snapshot()
    assert (view.active_index, view.active_product, view.changeover_pending, view.changeover_failed) == (
        2,
        "cable",
        False,
        False,
    )
    assert run_part(handshake, "3").shown.product_id == "cable"
    handshake.acknowledge()
    handshake.change_product("bottle")
    handshake.run_next(0)
    assert (handshake.snapshot().active_index, handshake.snapshot().active_product) == (1, "bottle")


@pytest.mark.parametrize("selector", [7, "no-such-product", 2])
def test_a_failed_changeover_keeps_the_active_product_and_says_so(make_station, selector):
    handshake, _, inspector = make_station()
    inspector.products = {"bottle"}  # the service has no references for "cable"
    handshake.change_product(selector)
    handshake.run_next(0)
    view = handshake.snapshot()
    assert (view.active_index, view.active_product, view.changeover_pending, view.changeover_failed) == (
        1,
        "bottle",
        False,
        True,
    )


def test_a_changeover_asked_while_busy_follows_the_part_in_progress(make_station):
    handshake, _, _ = make_station(GOOD)
    handshake.trigger("1")
    handshake.change_product(2)
    handshake.run_next(0)
    assert handshake.snapshot().shown.product_id == "bottle"
    handshake.run_next(0)
    assert handshake.snapshot().active_product == "cable"


def test_stop_finishes_the_part_in_progress_then_refuses_triggers(make_station):
    handshake, _, _ = make_station(GOOD)
    handshake.trigger("9")
    stop = threading.Event()
    stop.set()
    handshake.serve(stop)
    view = handshake.snapshot()
    assert view.state == State.RESULT_READY and view.shown.verdict == Verdict.OK
    assert not handshake.trigger("10")
    assert handshake.acknowledge() and handshake.snapshot().state == State.STOPPED


def test_each_result_carries_its_stage_times_exported_as_histograms(make_station, tmp_path):
    handshake, _, _ = make_station(GOOD, InspectFailed(ErrorCode.SERVICE_TIMEOUT, "slow"))
    results = tmp_path / "results.jsonl"
    handshake.on_result.append(ResultsFile(results))
    stages = run_part(handshake, "1").shown.stage_ms
    assert set(stages) == {"acquire", "prepare", "request", "decode", "queue", "predict", "encode", "output", "total"}
    assert stages["predict"] == 20.0 and stages["total"] >= stages["acquire"] + stages["request"]
    handshake.acknowledge()
    assert set(run_part(handshake, "2").shown.stage_ms) == {"acquire", "prepare", "output", "total"}
    registry = handshake.metrics.registry
    assert registry.get_sample_value("station_stage_seconds_count", {"stage": "predict"}) == 1
    assert registry.get_sample_value("station_stage_seconds_count", {"stage": "total"}) == 2
    assert registry.get_sample_value("station_results_total", {"verdict": "OK", "code": "NONE"}) == 1
    assert registry.get_sample_value("station_results_total", {"verdict": "ERROR", "code": "SERVICE_TIMEOUT"}) == 1
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(line["part_id"], line["verdict"], line["code"]) for line in lines] == [("1", "OK", 0), ("2", "ERROR", 4)]
    assert lines[0]["stage_ms"]["predict"] == 20.0


def test_a_station_starting_refuses_triggers_until_started(make_station):
    handshake, camera, _ = make_station(GOOD, starting=True)
    assert not handshake.trigger("1") and handshake.snapshot().state == State.STARTING
    assert not handshake.snapshot().ready and camera.acquired == 0
    handshake.start()
    assert run_part(handshake, "2").shown.verdict == Verdict.OK


def test_the_cameras_frame_id_and_timestamp_are_in_the_result(make_station, tmp_path):
    handshake, camera, _ = make_station(GOOD, BAD)
    camera.behaviour = lambda timeout_s: Frame(b"png", "top-42.png", frame_id=42, camera_timestamp_ns=1_700_000)
    first = run_part(handshake, "1").shown.record()
    handshake.acknowledge()
    camera.behaviour = None  # a camera without its own ids (folder, RTSP)
    second = run_part(handshake, "2").shown.record()
    assert (first["frame_id"], first["camera_timestamp_ns"]) == (42, 1_700_000)
    assert (second["frame_id"], second["camera_timestamp_ns"], second["views"]) == (None, None, [])

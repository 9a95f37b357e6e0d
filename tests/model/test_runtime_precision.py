"""Low-precision CPU runtimes: openvino-int8 (NNCF post-training quantization, procedural calibration set, cached)
and openvino-bf16 (refused on CPUs without native bf16)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model import ConfigError, create_detector
from model.runtime import exported, quantize
from model.runtime.__main__ import main as runtime_cli
from model.runtime.quantize import CALIBRATION_VERSION, PATTERNS, calibration_batches, calibration_image, int8_path
from tests.helpers.images import pil, textured_part, with_defect
from tests.model.test_runtime import main_thread_signal_stack_is_mapped, predictions

CORRELATION = 0.99  # int8 maps against torch fp32 (tiny measures ~0.999)
SCORE_TOLERANCE = 0.05  # int8 scores against torch fp32 (tiny measures ~1e-3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def frames():
    defect, _ = with_defect(textured_part(7), 60, 80, 40)
    return [pil(textured_part(5)), pil(defect), pil(textured_part(6, size=300)[:200])]  # last: 300 x 200


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("heads", ["random", None], ids=["full", "training-free"])
def test_int8_runtime_maps_correlate_with_torch_fp32(heads, cache_dir, frames):
    _, expected = predictions("torch", heads, cache_dir, frames)
    det, got = predictions("openvino-int8", heads, cache_dir, frames)
    assert det.runtime.name == "openvino-int8"
    for e, g in zip(expected, got, strict=True):
        assert g.anomaly_map.shape == e.anomaly_map.shape
        assert correlation(g.anomaly_map, e.anomaly_map) >= CORRELATION
        assert abs(g.score - e.score) <= SCORE_TOLERANCE
    assert np.abs(got[1].anomaly_map - expected[1].anomaly_map).max() > 1e-5  # really quantized, not the fp32 graph
    assert main_thread_signal_stack_is_mapped()  # NNCF's own OpenVINO cores came and went on this thread


def test_int8_model_is_cached_under_precision_and_calibration_version(cache_dir, frames, caplog, monkeypatch):
    predictions("openvino-int8", "random", cache_dir, frames)  # made by the test above, or now
    models = sorted(cache_dir.glob("*.xml"))
    assert {m.name.split("-")[1] for m in models} == {"clip", "dino"}  # training-free's DINOv2 has other weights
    for model in models:
        assert model.name.endswith(f"-int8-c{CALIBRATION_VERSION}.xml")
        assert model.with_suffix(".bin").is_file()
        assert (cache_dir / (model.name.removesuffix(f"-int8-c{CALIBRATION_VERSION}.xml") + ".onnx")).is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.runtime.quantize"):
        predictions("openvino-int8", "random", cache_dir, frames)
    assert not any("quantizing now" in record.getMessage() for record in caplog.records)  # found in the cache
    onnx = cache_dir / "x-dino-224x224-0123456789abcdef-v2.onnx"
    assert int8_path(onnx) != onnx.with_suffix(".xml")  # the fp32 key plus the precision
    monkeypatch.setattr(quantize, "CALIBRATION_VERSION", CALIBRATION_VERSION + 1)
    assert int8_path(onnx).name == f"x-dino-224x224-0123456789abcdef-v2-int8-c{CALIBRATION_VERSION + 1}.xml"


def test_export_command_with_precision_int8_writes_both_towers_quantized(cache_dir, capsys):
    assert runtime_cli(["export", "--config", "tiny", "--cache-dir", str(cache_dir), "--precision", "int8"]) == 0
    printed = [p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split()]
    assert [p.rsplit(".", 1)[-1] for p in printed] == ["onnx", "onnx", "xml", "xml"]
    assert {p.split("-")[1] for p in printed[2:]} == {"dino", "clip"}
    assert all((cache_dir / p).is_file() for p in printed)


def test_calibration_set_is_procedural_deterministic_and_varied():
    size = (40, 56)  # (H, W)
    images = [calibration_image(size, i) for i in range(len(PATTERNS))]
    assert all(img.shape == (40, 56, 3) and img.dtype == np.uint8 for img in images)
    assert all(np.array_equal(img, calibration_image(size, i)) for i, img in enumerate(images))  # the same each time
    assert len({img.tobytes() for img in images}) == len(PATTERNS)  # one of each pattern, all different
    assert all(img.std() > 5 for img in images)  # none is flat
    batches = calibration_batches(size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), count=3)
    assert [b.shape for b in batches] == [(1, 3, 40, 56)] * 3
    assert all(b.dtype == np.float32 and b.min() >= -2.0 - 1e-6 and b.max() <= 2.0 + 1e-6 for b in batches)
    np.testing.assert_allclose(batches[1][0, 0], (images[1][..., 0] / 255.0 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize("heads", ["random", None], ids=["full", "training-free"])
def test_bf16_is_refused_on_a_cpu_without_native_bf16(heads, monkeypatch):
    monkeypatch.setattr(exported, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="needs a CPU with native bf16"):
        create_detector("tiny", device="cpu", heads_file=heads, runtime="openvino-bf16")


def test_bf16_on_this_cpu_follows_its_capability(tmp_path):
    if exported.cpu_has_native_bf16():
        det = create_detector("tiny", device="cpu", runtime="openvino-bf16", runtime_cache_dir=tmp_path)
        assert det.runtime.name == "openvino-bf16"
    else:
        with pytest.raises(ConfigError, match="use 'openvino' \\(fp32\\) instead"):
            create_detector("tiny", device="cpu", runtime="openvino-bf16", runtime_cache_dir=tmp_path)


def test_bf16_runs_the_fp32_export_at_bf16_inference_precision(cache_dir, monkeypatch):
    monkeypatch.setattr(exported, "cpu_has_native_bf16", lambda: True)
    opened = []

    def fake_session(path, threads, cache, precision="f32"):
        opened.append((path.suffix, precision))
        return lambda images: [np.zeros((images.shape[0], 1), np.float32)] * 2

    monkeypatch.setattr(exported, "openvino_session", fake_session)
    det = create_detector("tiny", device="cpu", runtime="openvino-bf16", runtime_cache_dir=cache_dir)
    size = det.config.dino.image_size
    det.runtime.dino(torch.zeros(1, 3, size, size))  # (1, 3, S, S)
    assert opened == [(".onnx", "bf16")]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx avx2 fma", False),  # AVX2 only: int8 slower than fp32 here
        ("fpu avx2 avx512f avx512_vnni", True),
        ("fpu avx2 avx_vnni", True),
        ("fpu avx2 amx_bf16 amx_int8 amx_tile", True),
    ],
)
def test_int8_units_are_read_from_the_cpu_flags(flags, expected, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n")
    assert exported.cpu_has_int8_units(cpuinfo) is expected
    assert exported.cpu_has_int8_units(tmp_path / "missing") is None  # not Linux: unknown, no warning


@pytest.mark.parametrize(("units", "warned"), [(False, True), (True, False), (None, False)])
def test_int8_on_a_cpu_without_int8_units_warns_and_still_runs(units, warned, monkeypatch, caplog):
    monkeypatch.setattr(exported, "cpu_has_int8_units", lambda: units)
    with caplog.at_level(logging.WARNING, logger="model.runtime.exported"):
        det = create_detector("tiny", device="cpu", runtime="openvino-int8")
    assert det.runtime.name == "openvino-int8"
    assert any("without VNNI or AMX" in r.getMessage() for r in caplog.records) is warned

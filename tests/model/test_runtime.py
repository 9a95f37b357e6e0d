"""Backbone runtimes: the ONNX exports (OpenVINO, ONNX Runtime) give the torch runtime's maps and scores."""

from __future__ import annotations

import ctypes
import gc
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from model import ConfigError, create_detector
from model.runtime import create_runtime
from model.runtime.__main__ import main as runtime_cli
from model.runtime.export import onnx_path, tower, weight_checksum
from tests.helpers.images import pil, textured_part, with_defect

TOLERANCE = 1e-3  # the exported graphs' maps and scores: within 1e-3 of torch fp32


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="module")
def frames():
    defect, _ = with_defect(textured_part(7), 60, 80, 40)
    return [pil(textured_part(5)), pil(defect), pil(textured_part(6, size=300)[:200])]  # last: 300 x 200


def predictions(runtime: str, heads, cache_dir, frames):
    det = create_detector("tiny", device="cpu", heads_file=heads, runtime=runtime, runtime_cache_dir=cache_dir)
    refs = det.fit_references([pil(textured_part(s)) for s in (1, 2)])
    return det, det.predict(frames, refs)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("heads", [None, "random"], ids=["training-free", "full"])
def test_exported_runtime_matches_torch(runtime, heads, cache_dir, frames):
    _, expected = predictions("torch", heads, cache_dir, frames)
    det, got = predictions(runtime, heads, cache_dir, frames)
    assert det.runtime.name == runtime
    for e, g in zip(expected, got, strict=True):
        assert g.anomaly_map.shape == e.anomaly_map.shape
        assert np.abs(g.anomaly_map - e.anomaly_map).max() <= TOLERANCE
        assert abs(g.score - e.score) <= TOLERANCE
    assert not np.allclose(got[0].anomaly_map, got[1].anomaly_map)  # the maps are real, not constant


def test_export_is_cached_by_weight_checksum_and_logged(tmp_path, caplog):
    det = create_detector("tiny", device="cpu", runtime="onnxruntime", runtime_cache_dir=tmp_path)
    size = (det.config.dino.image_size, det.config.dino.image_size)
    path = onnx_path(tmp_path, det.network, "dino", size, weight_checksum(tower(det.network, "dino")))
    assert not path.exists()
    with caplog.at_level(logging.WARNING, logger="model.runtime.export"):
        det.predict([pil(textured_part(1))], det.fit_references([pil(textured_part(2))]))
    assert path.is_file()
    assert any("exporting now" in record.getMessage() for record in caplog.records)
    caplog.clear()
    again = create_detector("tiny", device="cpu", runtime="onnxruntime", runtime_cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="model.runtime.export"):
        again.predict([pil(textured_part(1))], again.fit_references([pil(textured_part(2))]))
    assert not any("exporting now" in record.getMessage() for record in caplog.records)  # found in the cache
    with torch.no_grad():
        det.network.dino.model.blocks[0].mlp.fc1.weight.add_(1.0)  # other weights -> another key
    assert weight_checksum(tower(det.network, "dino")) not in path.name


def test_export_command_writes_both_towers(tmp_path, capsys):
    assert runtime_cli(["export", "--config", "tiny", "--cache-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2
    assert {p.split("-")[1] for p in (p.rsplit("/", 1)[-1] for p in printed)} == {"dino", "clip"}
    assert all((tmp_path / p.rsplit("/", 1)[-1]).is_file() for p in printed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "edge"], "weight file {weights}/edge/dinov2-vit-small-patch14.safetensors is missing"),
        (["--config", "nonexistent"], "unknown config 'nonexistent'"),
        (["--config", "{weights}/missing.json"], "config file not found"),
    ],
)
def test_export_command_refuses_an_unusable_config_in_one_line(tmp_path, capsys, argv, message):
    """Missing weights or an unknown config: exit 2 with the reason (and the fetch command), not a traceback."""
    argv = [a.format(weights=tmp_path) for a in argv]
    assert runtime_cli(["export", *argv, "--weights-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(weights=tmp_path) in err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "tensorrt"}, "unknown runtime"),
        ({"compile_mode": "fast"}, "unknown compile mode"),
        ({"runtime": "openvino", "compile_mode": "compile"}, "torch runtime only"),
        ({"compile_mode": "cudagraphs"}, "needs a CUDA device"),
    ],
)
def test_bad_runtime_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_detector("tiny", device="cpu", **kwargs)


def test_compiled_torch_runtime_pads_to_a_bucket_and_returns_the_real_batch(monkeypatch):
    seen = []

    def fake_compile(module, **_):  # record the static shapes a compiled graph would see, run eagerly
        def run(images):
            seen.append(tuple(images.shape))
            return module(images)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    det = create_detector("tiny", device="cpu", heads_file="random")
    compiled = create_runtime("torch", det.network, det.device, Path(), "compile")
    size = det.config.dino.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))  # (3, 3, S, S)
    with torch.inference_mode():
        got, expected = compiled.dino(images), det.runtime.dino(images)
    assert seen == [(4, 3, size, size)]  # 3 -> the bucket of 4
    assert got.patch_tokens.shape == expected.patch_tokens.shape
    torch.testing.assert_close(got.patch_tokens, expected.patch_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.cls_token, expected.cls_token, atol=1e-5, rtol=1e-5)


def main_thread_signal_stack_is_mapped() -> bool:
    """Whether this thread's alternate signal stack (sigaltstack), if it has one, lies in mapped memory."""

    class Stack(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    current = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(current)) == 0
    if not current.ss_sp or current.ss_flags & 2:  # SS_DISABLE: no alternate stack
        return True
    maps = Path("/proc/self/maps").read_text().splitlines()
    spans = [tuple(int(end, 16) for end in line.split()[0].split("-")) for line in maps]
    return any(low <= current.ss_sp < high for low, high in spans)


def test_freed_openvino_sessions_leave_the_signal_stack_mapped(cache_dir, frames):
    """OpenVINO's CPU plugin puts an alternate signal stack of its own on the thread that loads it and unmaps it when
    freed, restoring the previous one only if its own is still current. With a plugin per session, the DINOv2 and
    CLIP sessions freed in the order they were made left the thread on an unmapped stack, and the next handled signal
    (SIGPIPE, SIGINT, SIGTERM) killed the process with SIGSEGV before any handler ran."""
    det, _ = predictions("openvino", "random", cache_dir, frames)  # DINOv2 and CLIP sessions on this thread
    del det
    gc.collect()
    assert main_thread_signal_stack_is_mapped()

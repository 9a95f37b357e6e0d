"""DCPSFR_RUNTIME / DCPSFR_RUNTIME_CACHE_DIR / DCPSFR_COMPILE reach create_detector; bad values are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model import ConfigError
from model.runtime import exported
from service.app import build_detector
from service.settings import Settings


def test_runtime_setting_selects_the_backbone_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("DCPSFR_RUNTIME", "onnxruntime")
    monkeypatch.setenv("DCPSFR_RUNTIME_CACHE_DIR", str(tmp_path))
    settings = Settings(model_config_name="tiny", device="cpu")
    detector = build_detector(settings)
    assert detector.runtime.name == "onnxruntime"
    assert "runtime='onnxruntime'" in repr(detector)


def test_unknown_runtime_or_compile_mode_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("DCPSFR_RUNTIME", "tensorrt")
    with pytest.raises(ValidationError, match="runtime"):
        Settings()
    monkeypatch.setenv("DCPSFR_RUNTIME", "torch")
    monkeypatch.setenv("DCPSFR_COMPILE", "fast")
    with pytest.raises(ValidationError, match="compile"):
        Settings()


@pytest.mark.parametrize("runtime", ["openvino-int8", "openvino-bf16"])
def test_low_precision_runtimes_are_settings_values(runtime, monkeypatch):
    monkeypatch.setenv("DCPSFR_RUNTIME", runtime)
    assert Settings().runtime == runtime


def test_bf16_runtime_on_a_cpu_without_native_bf16_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setattr(exported, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv("DCPSFR_RUNTIME", "openvino-bf16")
    monkeypatch.setenv("DCPSFR_RUNTIME_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="native bf16"):
        build_detector(Settings(model_config_name="tiny", device="cpu"))

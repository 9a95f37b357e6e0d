"""Weights: clear errors for missing or corrupt files, verified loading of local files, heads files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from model import WeightsMissingError, create_detector
from model.config import load_config
from model.weights import load_manifest, save_heads, write_state_dict
from model.weights.cli import main
from tests.helpers.fakehub import fake_hub
from tests.helpers.images import pil, textured_part
from tests.helpers.processes import REPO


def test_missing_weights_name_the_file_and_the_fetch_command(tmp_path):
    with pytest.raises(WeightsMissingError) as err:
        create_detector("edge", weights_dir=tmp_path, device="cpu")
    message = str(err.value)
    assert "dinov2-vit-small-patch14.safetensors" in message and "is missing" in message
    assert f"python -m model.weights fetch edge --weights-dir {tmp_path}" in message


def test_manifest_names_every_real_config_with_hub_file_source_licence_and_size():
    configs = load_manifest()["configs"]
    for name in ("paper", "edge"):
        for role in ("clip", "dino"):
            entry = configs[name][role]
            assert entry["file"].endswith(".safetensors")
            assert entry["hub"]["repo"].startswith("timm/") and entry["hub"]["filename"].endswith(".safetensors")
            assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
            assert entry["source"]["library"] in ("open_clip", "timm")
            assert entry["license"] and entry["size_mb"] > 0
        assert re.fullmatch(r"[0-9a-f]{40}", configs[name]["dino"]["hub"]["revision"]), "DINOv2 pinned to a commit"


@pytest.fixture
def file_backed_tiny(tmp_path):
    """A config with tiny's architecture whose backbones load from verified local files (the real load path)."""
    config = load_config("tiny", name="tinyfile", random_weights=False)
    source = create_detector("tiny", device="cpu", heads_file="random").network
    weights = tmp_path / "weights"
    write_state_dict(source.dino.model.state_dict(), weights / "tinyfile/dino.safetensors")
    write_state_dict(source.clip.model.state_dict(), weights / "tinyfile/clip.safetensors")
    manifest = {"configs": {"tinyfile": {
        "clip": {"file": "tinyfile/clip.safetensors", "source": {"library": "open_clip"}, "license": "x", "size_mb": 1},
        "dino": {"file": "tinyfile/dino.safetensors", "source": {"library": "timm"}, "license": "x", "size_mb": 1},
    }}}  # fmt: skip
    (weights / "manifest.json").write_text(json.dumps(manifest))
    return config, weights, source


def test_local_files_load_verified_and_match_the_source_weights(file_backed_tiny):
    config, weights, _ = file_backed_tiny
    det = create_detector(config, weights_dir=weights, device="cpu")
    tiny = create_detector("tiny", device="cpu")
    assert not det.random_weights and det.mode == "training-free"
    images = [pil(textured_part(s)) for s in range(3)]
    a = det.predict(images[2:], det.fit_references(images[:2]))[0]
    b = tiny.predict(images[2:], tiny.fit_references(images[:2]))[0]
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-6)


def test_corrupt_file_is_refused_with_the_fetch_command(file_backed_tiny):
    config, weights, _ = file_backed_tiny
    path = weights / "tinyfile/dino.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsMissingError, match=r"corrupt.*fetch tinyfile"):
        create_detector(config, weights_dir=weights, device="cpu")


def test_heads_file_in_weights_dir_switches_to_full_mode(file_backed_tiny):
    config, weights, source = file_backed_tiny
    with torch.no_grad():
        source.heads.caca.amplifier.gain.fill_(3.25)
    save_heads(source.heads, weights / "heads/tinyfile.safetensors", {"config": "tinyfile", "epochs": 0})
    det = create_detector(config, weights_dir=weights, device="cpu")
    assert det.mode == "full"
    assert det.network.heads.caca.amplifier.gain.item() == 3.25
    assert det.heads_info["epochs"] == 0


def test_heads_file_of_another_architecture_is_refused(tmp_path):
    heads = create_detector("tiny", device="cpu", heads_file="random").network.heads
    state = {k: v for k, v in heads.state_dict().items() if not k.startswith("acl.")}
    write_state_dict(state, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        create_detector("tiny", device="cpu", heads_file=tmp_path / "bad.safetensors")


def test_cli_list_and_verify_missing(tmp_path, capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    edge_clip = next(line for line in listing.splitlines() if line.startswith("edge   clip"))
    assert "(open_clip ViT-B-16-quickgelu (openai), MIT" in edge_clip, edge_clip
    assert "{" not in listing, "the sources are printed as Python dicts"
    assert main(["verify", "edge", "--weights-dir", str(tmp_path)]) == 2
    assert "fetch edge" in capsys.readouterr().err
    for command in ("verify", "fetch"):  # a typo was "ok" with nothing checked, or a SystemExit from library code
        assert main([command, "egde"]) == 2
        assert "unknown config 'egde': the weights manifest knows paper, edge, tiny" in capsys.readouterr().err


def test_cli_list_takes_weights_dir_after_the_subcommand(tmp_path, capsys):
    """Like `verify edge --weights-dir X`: `list --weights-dir X` was a usage error (exit 2)."""
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "dinov2-vit-small-patch14.safetensors").write_bytes(b"x")
    assert main(["list", "--weights-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert next(line for line in listing if line.startswith("edge   dino")).split()[2] == "present"
    assert next(line for line in listing if line.startswith("edge   clip")).split()[2] == "missing"


@pytest.mark.parametrize("command", ["verify", "fetch"])
def test_cli_config_without_weight_files_says_so(tmp_path, capsys, command):
    """`verify tiny` / `fetch tiny` say that there is nothing to check, rather than nothing at all."""
    assert main([command, "tiny", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == "ok  config 'tiny' needs no weight files (random init, no backbone files)\n"
    assert not list(tmp_path.iterdir()), "nothing is written for a config without files"


def test_cli_help_explains_without_a_runpy_warning():
    """`python -m model.weights` is the documented fetch command: its help says what it does, and it must not open
    with runpy's "found in sys.modules" RuntimeWarning (were the package `model` to import `model.weights`)."""
    done = subprocess.run(
        [sys.executable, "-m", "model.weights", "--help"], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert "fetch" in done.stdout and "downloads" in done.stdout
    assert "RuntimeWarning" not in done.stderr, done.stderr


def test_fetch_then_load_the_edge_config_from_an_imitated_hub(tmp_path):
    """The real manifest's edge entries, fetched from a local imitation of the hub that publishes timm's DINOv2
    ViT-S/14 at random init (the published file's format, minus the trained values), then loaded training-free."""
    import timm
    from safetensors.torch import save

    from model.weights.fetching import fetch
    from model.weights.hub import HubOptions

    entry = load_manifest()["configs"]["edge"]["dino"]
    state = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0).state_dict()
    with fake_hub() as hub:
        hub.add(entry["hub"]["repo"], entry["hub"]["filename"], save({k: v.contiguous() for k, v in state.items()}))
        (tmp_path / "manifest.json").write_text(json.dumps({"configs": {"edge": load_manifest()["configs"]["edge"]}}))
        paths = fetch("edge", tmp_path, options=HubOptions(endpoint=hub.url))
    assert [p.name for p in paths] == ["dinov2-vit-small-patch14.safetensors"]
    det = create_detector("edge", weights_dir=tmp_path, device="cpu", dino={"image_size": 224})
    assert det.mode == "training-free" and not det.random_weights and det.network.dino.grid == (16, 16)
    refs = det.fit_references([pil(textured_part(1, size=160))])
    (pred,) = det.predict([pil(textured_part(2, size=160))], refs)
    assert pred.anomaly_map.shape == (160, 160) and np.isfinite(pred.score)


def test_larger_input_sizes_interpolate_position_embeddings_on_load(file_backed_tiny, tmp_path):
    """CLIP and DINOv2 at sizes other than the saved weights' (e.g. CLIP at 518 as APRIL-GAN does)."""
    config, weights, _ = file_backed_tiny
    det = create_detector(
        config,
        weights_dir=weights,
        device="cpu",
        heads_file="random",
        clip={"image_size": 168},  # 12x12 grid instead of 8x8
        dino={"image_size": 280},  # 20x20 grid instead of 16x16
    )
    assert det.network.clip.grid == (12, 12) and det.network.dino.grid == (20, 20)
    refs = det.fit_references([pil(textured_part(1))])
    (pred,) = det.predict([pil(textured_part(2, size=150))], refs)
    assert pred.anomaly_map.shape == (150, 150) and np.isfinite(pred.anomaly_map).all()

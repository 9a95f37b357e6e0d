"""Local weight files: manifest, sha256 verification, loading and heads files.

Nothing here downloads: a missing or corrupt file raises WeightsMissingError naming the file and the command that
fetches it. Only the fetch (`model.weights.fetching`, `python -m model.weights fetch <config>`) touches a model hub.
A backbone file is verified against the sha256 the manifest pins for it, else against the `<file>.sha256` the fetch
wrote beside it after checking the downloaded bytes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from model.config import ConfigError
from model.files import atomic_path, sha256_of

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
MANIFEST_NAME = "manifest.json"


class WeightsMissingError(FileNotFoundError):
    """A weight file is missing or does not match its sha256; the message says how to fetch it."""


def fetch_command(config_name: str, weights_dir: Path) -> str:
    """The shell command that downloads the weights of `config_name` into `weights_dir`."""
    return f"python -m model.weights fetch {config_name} --weights-dir {weights_dir}"


def load_manifest(weights_dir: Path | None = None) -> dict[str, Any]:
    """The manifest in `weights_dir` if it has one, else the project's own weights/manifest.json."""
    for folder in (weights_dir, DEFAULT_WEIGHTS_DIR):
        if folder is not None and (Path(folder) / MANIFEST_NAME).is_file():
            return json.loads((Path(folder) / MANIFEST_NAME).read_text())
    raise FileNotFoundError(f"no {MANIFEST_NAME} in {weights_dir} or {DEFAULT_WEIGHTS_DIR}")


def manifest_entry(config_name: str, role: str, weights_dir: Path | None = None) -> dict[str, Any]:
    """The manifest's entry (file, source, size) for one role (clip or dino) of a config; raises WeightsMissingError
    when it has none."""
    configs = load_manifest(weights_dir)["configs"]
    if config_name not in configs or role not in configs[config_name]:
        raise WeightsMissingError(
            f"the weights manifest has no {role!r} file for config {config_name!r}: "
            f"add it to {MANIFEST_NAME} or use a config with published weights ({', '.join(configs)})"
        )
    return configs[config_name][role]


def manifest_entries(config_name: str, weights_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's weight files of `config_name` by role ({} for tiny); raises ConfigError for a config the
    manifest does not know."""
    configs = load_manifest(weights_dir)["configs"]
    if config_name not in configs:
        raise ConfigError(f"unknown config {config_name!r}: the weights manifest knows {', '.join(configs)}")
    return configs[config_name]


def source_label(source: dict[str, str]) -> str:
    """A manifest source in one short phrase, e.g. "open_clip ViT-B-16-quickgelu (openai)"."""
    label = f"{source['library']} {source['model']}"
    return f"{label} ({source['pretrained']})" if source.get("pretrained") else label


def checksum_path(path: Path) -> Path:
    """The `<file>.sha256` path beside `path`."""
    return path.with_name(path.name + ".sha256")


def expected_sum(entry: dict[str, Any], path: Path) -> str | None:
    """The sha256 a weight file must have: the manifest's pin, else its `.sha256` file's; None when neither is there."""
    if entry.get("sha256"):
        return str(entry["sha256"]).lower()
    sums = checksum_path(path)
    return sums.read_text().split()[0].lower() if sums.is_file() else None


def readable_file_mode() -> int:
    """The mode a new file gets from the umask (0644 under the usual 022): weight files are read by the service's
    user, whoever wrote them."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def verified_weight_file(config_name: str, role: str, weights_dir: Path) -> Path:
    """The path of a present, sha256-verified weight file, or WeightsMissingError saying what to run."""
    entry = manifest_entry(config_name, role, weights_dir)
    path = weights_dir / entry["file"]
    fetch = fetch_command(config_name, weights_dir)
    if not path.is_file():
        raise WeightsMissingError(f"weight file {path} is missing ({role} of config {config_name!r}): run `{fetch}`")
    expected = expected_sum(entry, path)
    if expected is None:
        raise WeightsMissingError(f"checksum {checksum_path(path)} is missing for {path}: run `{fetch}` again")
    try:
        actual = sha256_of(path)
    except PermissionError as err:
        raise WeightsMissingError(
            f"weight file {path} is not readable by this user (uid {os.getuid()}): make it readable (chmod a+r) "
            f"or run `{fetch}` as this user"
        ) from err
    if actual != expected:
        raise WeightsMissingError(
            f"weight file {path} is corrupt (sha256 {actual[:12]}…, expected {expected[:12]}…): "
            f"run `{fetch}` (it replaces the file)"
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file."""
    return load_file(path)


def write_state_dict(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Save tensors as safetensors with a <file>.sha256 beside it; returns the sum. Written atomically, readable by
    others as the umask allows (safetensors itself writes 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu().clone() for k, v in state.items()}, tmp, metadata=metadata)
        os.chmod(tmp, readable_file_mode())
    return write_checksum(path)


def write_checksum(path: Path, digest: str | None = None) -> str:
    """Write `<file>.sha256` beside `path` (sha256sum format; `digest` when already known, else computed); returns
    the sum."""
    digest = digest or sha256_of(path)
    checksum_path(path).write_text(f"{digest}  {path.name}\n")
    return digest


# --- trained heads -------------------------------------------------------------------------------------------


def heads_path(weights_dir: Path, config_name: str) -> Path:
    """The default heads file of a config: <weights_dir>/heads/<config>.safetensors."""
    return weights_dir / "heads" / f"{config_name}.safetensors"


def save_heads(heads: nn.Module, path: Path, info: dict[str, Any]) -> None:
    """Heads state (safetensors + sha256) and a JSON sidecar with what produced them."""
    write_state_dict(heads.state_dict(), path, metadata={"config": str(info.get("config", ""))})
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))


def load_heads(heads: nn.Module, path: Path) -> dict[str, Any]:
    """Load a heads file into `heads` (strict); returns its sidecar info (empty when there is none)."""
    sums = checksum_path(path)
    if sums.is_file() and sums.read_text().split()[0] != sha256_of(path):
        raise WeightsMissingError(f"heads file {path} does not match {sums}: retrain or copy it again")
    missing, unexpected = heads.load_state_dict(read_state_dict(path), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"heads file {path} does not fit this config's heads (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): was it trained for another config?"
        )
    sidecar = path.with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def heads_file_config(path: Path) -> str:
    """The config name stored in a heads file's safetensors metadata ("" when there is none)."""
    with safe_open(path, "pt") as handle:
        return (handle.metadata() or {}).get("config", "")

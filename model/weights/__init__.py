"""Local weight files: manifest, sha256 verification, loading, heads files, and the explicit `fetch` command.

Nothing here downloads at load time: a missing or corrupt file raises WeightsMissingError naming the file
and the command that fetches it. Only `python -m model.weights fetch <config>` touches a model hub.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

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


def checksum_path(path: Path) -> Path:
    """The `<file>.sha256` path beside `path`."""
    return path.with_name(path.name + ".sha256")


def verified_weight_file(config_name: str, role: str, weights_dir: Path) -> Path:
    """The path of a present, sha256-verified weight file, or WeightsMissingError saying what to run."""
    entry = manifest_entry(config_name, role, weights_dir)
    path = weights_dir / entry["file"]
    fetch = fetch_command(config_name, weights_dir)
    if not path.is_file():
        raise WeightsMissingError(f"weight file {path} is missing ({role} of config {config_name!r}): run `{fetch}`")
    sums = checksum_path(path)
    if not sums.is_file():
        raise WeightsMissingError(f"checksum {sums} is missing for {path}: run `{fetch}` again")
    expected = sums.read_text().split()[0]
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsMissingError(
            f"weight file {path} is corrupt (sha256 {actual[:12]}…, expected {expected[:12]}…): "
            f"delete it and run `{fetch}`"
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file."""
    return load_file(path)


def write_state_dict(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Save tensors as safetensors with a <file>.sha256 beside it; returns the sum. Written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu().clone() for k, v in state.items()}, tmp, metadata=metadata)
    return write_checksum(path)


def write_checksum(path: Path) -> str:
    """Write `<file>.sha256` beside `path` (sha256sum format); returns the sum."""
    digest = sha256_of(path)
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


# --- the explicit fetch (needs internet) ---------------------------------------------------------------------


def source_label(source: dict[str, str]) -> str:
    """A manifest source in one short phrase, e.g. "open_clip ViT-B-16-quickgelu (openai)"."""
    label = f"{source['library']} {source['model']}"
    return f"{label} ({source['pretrained']})" if source.get("pretrained") else label


def download_state_dict(source: dict[str, str]) -> dict[str, torch.Tensor]:
    """Download a backbone from its hub (the only place in the project that does)."""
    if source["library"] == "open_clip":
        import open_clip

        model = open_clip.create_model(source["model"], pretrained=source["pretrained"])
        return model.state_dict()
    if source["library"] == "timm":
        import timm

        model = timm.create_model(source["model"], pretrained=True, num_classes=0)
        return model.state_dict()
    raise ValueError(f"unknown weight source library {source['library']!r}")


def manifest_entries(config_name: str, weights_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's weight files of `config_name` by role ({} for tiny); raises ConfigError for a config the
    manifest does not know."""
    configs = load_manifest(weights_dir)["configs"]
    if config_name not in configs:
        raise ConfigError(f"unknown config {config_name!r}: the weights manifest knows {', '.join(configs)}")
    return configs[config_name]


def fetch(config_name: str, weights_dir: Path, force: bool = False) -> list[Path]:
    """Download every backbone file of `config_name` into `weights_dir`, verified by sha256 afterwards; raises
    ConfigError for an unknown config."""
    entries = manifest_entries(config_name, weights_dir)
    written = []
    for role, entry in tqdm(entries.items(), desc=f"{config_name} weights", unit="file", disable=not entries):
        path = weights_dir / entry["file"]
        if path.is_file() and checksum_path(path).is_file() and not force:
            verified_weight_file(config_name, role, weights_dir)
            log.info("%s: present and verified", path)
            written.append(path)
            continue
        log.info("%s: downloading %s (~%s MB) ...", path, source_label(entry["source"]), entry.get("size_mb", "?"))
        state = download_state_dict(entry["source"])
        metadata = {"source": json.dumps(entry["source"]), "fetched": datetime.now(UTC).isoformat()}
        digest = write_state_dict(state, path, metadata)
        log.info("%s: written, sha256 %s", path, digest)
        written.append(path)
    return written


def verify(config_name: str, weights_dir: Path) -> list[Path]:
    """Check every weight file of `config_name` against its sha256; raises WeightsMissingError on the first missing or
    corrupt one, ConfigError for an unknown config."""
    entries = manifest_entries(config_name, weights_dir)
    return [verified_weight_file(config_name, role, weights_dir) for role in entries]


def main(argv: list[str] | None = None) -> int:
    """Run `python -m model.weights fetch|verify|list`; returns 0, or 2 when a weight file is missing or corrupt or
    the config is unknown."""
    parser = argparse.ArgumentParser(
        prog="python -m model.weights",
        description="Manage backbone weight files. `fetch` is the only command that downloads (needs internet); "
        "the detector and the service only ever load verified local files.",
    )
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR, help="default: %(default)s")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download a config's backbone weights and write their sha256 sums")
    p_fetch.add_argument("config", help="paper or edge (tiny needs no files)")
    p_fetch.add_argument("--force", action="store_true", help="download again even when present")
    p_verify = sub.add_parser("verify", help="check a config's files against their sha256 sums")
    p_verify.add_argument("config")
    p_list = sub.add_parser("list", help="show the manifest and which files are present")
    # the subcommands accept --weights-dir too, after their arguments
    for p in (p_fetch, p_verify, p_list):
        p.add_argument("--weights-dir", type=Path, default=argparse.SUPPRESS, help="default: weights/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command in ("fetch", "verify"):
            if args.command == "fetch":
                paths = fetch(args.config, args.weights_dir, args.force)
            else:
                paths = verify(args.config, args.weights_dir)
            for path in paths:
                print(f"ok  {path}")
            if not paths:  # silence would read as "nothing was checked"
                print(f"ok  config {args.config!r} needs no weight files (random init, no backbone files)")
        else:
            for name, entries in load_manifest(args.weights_dir)["configs"].items():
                for role, entry in entries.items():
                    present = (args.weights_dir / entry["file"]).is_file()
                    print(
                        f"{name:6} {role:5} {'present' if present else 'missing':8} {entry['file']}"
                        f"  ({source_label(entry['source'])}, {entry['license']}, ~{entry['size_mb']} MB)"
                    )
    except (WeightsMissingError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

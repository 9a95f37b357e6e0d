"""python -m model.runtime export --config edge: export the backbones for the ONNX runtimes ahead of time."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.config import ConfigError
from model.factory import create_detector, default_runtime_cache
from model.runtime.export import export_backbones
from model.runtime.quantize import quantize_backbones
from model.weights import DEFAULT_WEIGHTS_DIR


def main(argv: list[str] | None = None) -> int:
    """Run `python -m model.runtime export`: export the config's backbones to ONNX in the cache (with `--precision
    int8`, also their int8 quantizations) and print the paths; returns 0, or 2 with one line when the config or
    its weight files cannot be used."""
    parser = argparse.ArgumentParser(
        prog="python -m model.runtime",
        description="Export the frozen CLIP and DINOv2 vision towers to ONNX for DCPSFR_RUNTIME=openvino or "
        "onnxruntime (with --precision int8, also their int8 quantization for openvino-int8). The files are cached "
        "under a key of the weights' checksum and the input size (int8: plus the calibration set's version), so "
        "the service finds them at start-up instead of making them on first use.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export both towers at the config's input sizes")
    export.add_argument("--config", default="edge", help="paper, edge, tiny or a JSON config path (default: edge)")
    export.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR, help="default: %(default)s")
    export.add_argument(
        "--cache-dir", type=Path, default=None, help="default: <weights-dir>/runtime-cache (DCPSFR_RUNTIME_CACHE_DIR)"
    )
    export.add_argument("--random-init", action="store_true", help="random weights of the real size (timing only)")
    export.add_argument(
        "--training-free", action="store_true", help="DINOv2 only (the service without a heads file needs no CLIP)"
    )
    export.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: also quantize them for DCPSFR_RUNTIME=openvino-int8 (needs nncf; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cache_dir = args.cache_dir or default_runtime_cache(args.weights_dir)
    try:
        detector = create_detector(
            args.config,
            weights_dir=args.weights_dir,
            device="cpu",
            random_init=args.random_init,
            heads_file=None if args.training_free else "random",  # the heads' values do not enter the export
        )
    except (ConfigError, FileNotFoundError) as err:  # WeightsMissingError too: its message names the fetch command
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths = export_backbones(detector.network, cache_dir)
    if args.precision == "int8":
        paths += quantize_backbones(detector.network, paths)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

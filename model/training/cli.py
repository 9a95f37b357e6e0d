"""Command-line arguments shared by the training commands (train, evaluate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.weights import DEFAULT_WEIGHTS_DIR


def add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config, --weights-dir and --device to `parser`."""
    parser.add_argument("--config", default="edge", help="paper, edge, tiny or a JSON config (default: %(default)s)")
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR, help="default: %(default)s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --data KIND:PATH (required) and --categories to `parser`."""
    parser.add_argument("--data", required=True, help="KIND:PATH, KIND one of mvtec, visa (e.g. mvtec:/data/mvtec_ad)")
    parser.add_argument("--categories", nargs="+", help="a subset of the dataset's categories (default: all)")

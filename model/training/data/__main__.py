"""Command line for datasets: `python -m model.training.data fetch|synth|info ...`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from model.training.data.datasets import DatasetError, open_dataset
from model.training.data.fetch import SOURCES, FetchError, fetch_dataset
from model.training.data.synth import ANOMALIES, PARTS, SynthesisError, write_synthetic_dataset


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m model.training.data` with its fetch, synth and info subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m model.training.data",
        description="Dataset tools: download MVTec AD or VisA, write a synthetic dataset in the MVTec AD layout, "
        "or check a dataset's layout.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_fetch_parser(commands)
    synth = commands.add_parser(
        "synth",
        help="write a small synthetic dataset (procedural parts with cut-paste and texture-blend defects)",
        description=(
            "Render procedural 'textured parts' (normal images with random variation) and add synthetic "
            f"anomalies ({', '.join(ANOMALIES)}) to some of them. Writes the MVTec AD layout: "
            "OUT/<category>/train/good, test/good, test/<defect type>, and ground_truth/<defect type>/"
            "<n>_mask.png with {0,255} masks, so `mvtec:OUT` works wherever a dataset is expected. "
            "For exercising training and evaluation code; results on it say nothing about real accuracy."
        ),
    )
    synth.add_argument("out", metavar="OUT", help="output folder (category folders must not exist yet)")
    synth.add_argument(
        "--categories", nargs="+", choices=list(PARTS), default=list(PARTS), help="categories (default: all)"
    )
    synth.add_argument("--train", type=int, default=8, help="normal training images per category (default 8)")
    synth.add_argument("--test-good", type=int, default=4, help="normal test images per category (default 4)")
    synth.add_argument(
        "--test-bad", type=int, default=4, help="anomalous test images per category and defect type (default 4)"
    )
    synth.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same images (default 0)")

    info = commands.add_parser(
        "info",
        help="list a dataset's categories and image counts (checks the layout)",
        description="Open a dataset and print, per category, the training and test image counts by defect type.",
    )
    info.add_argument("spec", metavar="KIND:PATH", help="dataset, e.g. mvtec:/data/mvtec_ad or visa:/data/visa")
    info.add_argument("--categories", nargs="+", default=None, help="only these categories")
    return parser


def add_fetch_parser(commands) -> None:
    """Add the `fetch` subcommand (with the datasets' licences and sizes in its description)."""
    listing = "; ".join(
        f"{kind}: {s.title}, {s.licence}, ~{s.archive_gb:.1f} GB, {s.categories} categories"
        for kind, s in SOURCES.items()
    )
    fetch = commands.add_parser(
        "fetch",
        help="download MVTec AD or VisA from the official source (needs internet)",
        description=(
            "Print the dataset's licence, download the archive from its official source (the URL anomalib uses) "
            "into ROOT with a progress bar, resume a partial download (ROOT/<archive>.part, HTTP Range), verify "
            "its sha256, extract it safely (members outside ROOT, links leaving it, devices: refused), check that "
            "it opens, and stamp ROOT/.fetched.json so a second run does nothing. Then read it as KIND:ROOT. "
            f"Datasets: {listing}."
        ),
    )
    fetch.add_argument("kind", choices=list(SOURCES), help="which dataset")
    fetch.add_argument("--root", type=Path, required=True, help="dataset folder, e.g. data/mvtec_ad or data/visa")
    fetch.add_argument("--url", help="download from this URL instead (a mirror of the same archive)")
    fetch.add_argument("--sha256", help="expected sha256 of the archive at --url (default: the published one)")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the archive after extracting it")


def run_fetch(args: argparse.Namespace) -> None:
    """Download, verify and extract the chosen dataset into --root."""
    fetch_dataset(args.kind, args.root, url=args.url, sha256=args.sha256, keep_archive=args.keep_archive)


def run_synth(args: argparse.Namespace) -> None:
    """Write the synthetic dataset and print where it went."""
    out = write_synthetic_dataset(
        args.out, args.categories, args.train, args.test_good, args.test_bad, args.size, args.seed
    )
    print(f"wrote {len(args.categories)} synthetic categories to {out} (read it as mvtec:{out})")


def run_info(args: argparse.Namespace) -> None:
    """Print each category's training image count and test image counts by defect type."""
    dataset = open_dataset(args.spec, args.categories)
    print(f"{dataset.name} at {dataset.root}: {len(dataset.categories)} categories")
    for category in dataset.categories:
        train = len(dataset.train_images(category))
        types = Counter(sample.defect_type for sample in dataset.test_samples(category))
        test = ", ".join(f"{name} {count}" for name, count in sorted(types.items()))
        print(f"  {category}: train {train}; test {test}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns 0, or 2 with the error on stderr when the dataset, fetch or synthesis fails."""
    args = build_parser().parse_args(argv)
    try:
        {"fetch": run_fetch, "synth": run_synth, "info": run_info}[args.command](args)
    except (DatasetError, SynthesisError, FetchError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

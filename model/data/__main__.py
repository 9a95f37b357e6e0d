"""Command line for datasets: `python -m model.data synth ...` and `python -m model.data info ...`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from model.data.datasets import DatasetError, open_dataset
from model.data.synth import ANOMALIES, PARTS, SynthesisError, write_synthetic_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.data",
        description="Dataset tools: write a synthetic dataset in the MVTec AD layout, or check a dataset's layout.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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


def run_synth(args: argparse.Namespace) -> None:
    out = write_synthetic_dataset(
        args.out, args.categories, args.train, args.test_good, args.test_bad, args.size, args.seed
    )
    print(f"wrote {len(args.categories)} synthetic categories to {out} (read it as mvtec:{out})")


def run_info(args: argparse.Namespace) -> None:
    dataset = open_dataset(args.spec, args.categories)
    print(f"{dataset.name} at {dataset.root}: {len(dataset.categories)} categories")
    for category in dataset.categories:
        train = len(dataset.train_images(category))
        types = Counter(sample.defect_type for sample in dataset.test_samples(category))
        test = ", ".join(f"{name} {count}" for name, count in sorted(types.items()))
        print(f"  {category}: train {train}; test {test}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"synth": run_synth, "info": run_info}[args.command](args)
    except (DatasetError, SynthesisError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m model.weights fetch|verify|list`: the command line of the weight files.

Every failure is one line on stderr and exit status 2, never a traceback; the HTTP library's chatter goes to the
debug log (`-v` shows it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from model.config import ConfigError
from model.weights import DEFAULT_WEIGHTS_DIR, WeightsMissingError, load_manifest, manifest_entries, source_label
from model.weights import verified_weight_file as verified
from model.weights.fetching import FetchProgress, fetch, needed_roles
from model.weights.hub import HubOptions

CHATTY_LOGGERS = ("httpx", "httpcore", "huggingface_hub", "urllib3", "filelock")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see `--help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m model.weights",
        description="Manage backbone weight files. `fetch` is the only command that downloads (needs internet); "
        "the detector and the service only ever load verified local files.",
    )
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR, help="default: %(default)s")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log, HTTP requests included")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser(
        "fetch",
        help="download what a config's mode needs (DINOv2; CLIP too in full mode or with --with-clip), verified",
    )
    p_fetch.add_argument("config", help="paper or edge (tiny needs no files)")
    p_fetch.add_argument("--with-clip", action="store_true", help="CLIP too, without trained heads (for training)")
    p_fetch.add_argument("--force", action="store_true", help="download again even when present and verified")
    p_fetch.add_argument("--url", help="hub or mirror URL (default: HF_ENDPOINT, else https://huggingface.co)")
    p_fetch.add_argument(
        "--deadline", type=float, default=HubOptions.deadline_s, help="seconds for the whole fetch (%(default)s)"
    )
    p_verify = sub.add_parser("verify", help="check the files a config's mode needs against their sha256 sums")
    p_verify.add_argument("config")
    p_verify.add_argument("--with-clip", action="store_true", help="check CLIP too, without trained heads")
    p_list = sub.add_parser("list", help="show the manifest and which files are present")
    # the subcommands accept --weights-dir too, after their arguments
    for p in (p_fetch, p_verify, p_list):
        p.add_argument("--weights-dir", type=Path, default=argparse.SUPPRESS, help="default: weights/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns 0, or 2 with one line on stderr when a file is missing, corrupt or cannot be
    downloaded, or the config is unknown."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.command == "list":
            list_files(args.weights_dir)
            return 0
        if args.command == "fetch":
            options = HubOptions(endpoint=args.url, deadline_s=args.deadline)
            with ProgressBar() as bar:
                paths = fetch(args.config, args.weights_dir, with_clip=args.with_clip, force=args.force,
                              options=options, on_progress=bar.update)  # fmt: skip
        else:
            roles = needed_roles(args.config, args.weights_dir, args.with_clip)
            paths = [verified(args.config, role, args.weights_dir) for role in roles]
    except (WeightsMissingError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"ok  {path}")
    if not manifest_entries(args.config, args.weights_dir):  # silence would read as "nothing was checked"
        print(f"ok  config {args.config!r} needs no weight files (random init, no backbone files)")
    return 0


def list_files(weights_dir: Path) -> None:
    """Print every manifest file: config, role, present or missing, path, source, licence, size."""
    for name, entries in load_manifest(weights_dir)["configs"].items():
        for role, entry in entries.items():
            present = (weights_dir / entry["file"]).is_file()
            print(
                f"{name:6} {role:5} {'present' if present else 'missing':8} {entry['file']}"
                f"  ({source_label(entry['source'])}, {entry['license']}, ~{entry['size_mb']} MB)"
            )


class ProgressBar:
    """A tqdm bar in MB over the whole fetch, on a terminal's stderr, from the first byte on, erased at the end (the
    `ok` lines or the error line stay)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, progress: FetchProgress) -> None:
        """Show `progress` (called by the fetch as bytes arrive)."""
        if progress.bytes_done == 0 and self.bar is None:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=progress.bytes_total,
                unit="B",
                unit_scale=True,
                desc=f"{progress.config} weights",
                leave=False,
                disable=None,  # a terminal only: logs (docker build) get the fetch's log lines instead
            )
        self.bar.total = progress.bytes_total
        self.bar.n = progress.bytes_done
        self.bar.set_postfix_str(progress.file, refresh=False)
        self.bar.refresh()

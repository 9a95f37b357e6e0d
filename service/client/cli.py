"""`python -m service.client`: the camera-side client of the inspection service."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from model import positive_int, positive_seconds
from service.client.api import ApiError, ConfigurationError, FrameError, InspectApi, RetryPolicy, Stopped
from service.client.camera import CameraSpooler, CameraUnavailable
from service.client.journal import Journal
from service.client.names import display_name, safe_stem
from service.client.outputs import OutputFolder, summary
from service.client.watch import (
    DEFAULT_SETTLE_S,
    INCOMPLETE_GRACE_S,
    FrameSender,
    is_frame_name,
    watch_folder,
)
from service.imaging.formats import ACCEPTED_NAMES, ACCEPTED_SUFFIXES, PRODUCT_ID
from station.camera import TEMPORARY_SUFFIXES

log = logging.getLogger("service.client")

JOURNAL_NAME = ".dcpsfr-journal.sqlite3"
URL_VARIABLE, KEY_VARIABLE = "DCPSFR_CLIENT_URL", "DCPSFR_CLIENT_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
RENAMED_VARIABLES = {"DCPSFR_URL": URL_VARIABLE, "DCPSFR_API_KEY": KEY_VARIABLE}  # old name -> the client's name
EPILOG = """examples:
  python -m service.client references --product bottle good1.png good2.png
  python -m service.client inspect --product bottle --out results/ frame1.png frame2.png
  python -m service.client watch /srv/line1/frames --product bottle --out /srv/line1/results
  python -m service.client watch /srv/line1/spool --product bottle --out /srv/line1/results --camera rtsp://cam1/stream

environment: DCPSFR_CLIENT_URL and DCPSFR_CLIENT_API_KEY are the defaults of --url and --api-key (keeps the key
out of `ps`; the service's own keys are DCPSFR_API_KEYS).
exit status: 0 done; 1 a request or frame failed (`inspect`: any file; `watch --once`: any frame rejected or
unreadable); 2 bad usage (arguments, a DIR, --out or --journal that cannot be used, --out or --journal where
`watch` would send them as frames) or misconfiguration (key, product, camera)."""
WATCH_EPILOG = f"""which files are sent:
  only names ending in {" ".join(sorted(ACCEPTED_SUFFIXES))} ({ACCEPTED_NAMES}: what the service accepts);
  never temporary names: hidden (.name), ~name, or ending in {", ".join(TEMPORARY_SUFFIXES)}.
  Only DIR itself is scanned, not its subfolders; --out must not be DIR (a subfolder is fine).
when a file is sent:
  once its writer is done: size, mtime, ctime and inode unchanged for --settle seconds (default
  {DEFAULT_SETTLE_S:g}), and a PNG, JPEG or BMP must also end as its format says (else it waits up to
  {INCOMPLETE_GRACE_S:g} s more). A writer that may pause longer should write under a temporary name
  (frame.png.part) and rename it when done. A file rewritten under the same name is sent again.
a rejected file (400/413/415/422) gets OUT/<stem>.error.json, is recorded once and is not sent again;
--delete-sent deletes only images whose result is saved, never a rejected one.
a name that is not plain UTF-8 text is logged and sent under its safe stem; see docs/client.md."""


def service_url(text: str) -> str:
    """argparse type: an http:// or https:// URL with a host; anything else is a usage error, never retried."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a service URL: use http://HOST:PORT or https://...")
    return text


class UsageError(Exception):
    """A command line the client cannot act on (a path that cannot be used, say); main prints it and exits 2."""


def product_id(text: str) -> str:
    """argparse type: a product id the service accepts (1-64 letters, digits, `._-`, starting with a letter or
    digit); anything else is a usage error before any request (the service would answer 422 to every file)."""
    if PRODUCT_ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a product id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m service.client` with its references, inspect and watch subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m service.client",
        description="Camera-side client of the DCP-SFR inspection service: upload reference images, inspect "
        "files, or watch a folder (optionally fed by a camera) and post every new image exactly once.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        type=service_url,
        default=os.environ.get(URL_VARIABLE, DEFAULT_URL),
        help=f"service URL (default: %(default)s; {URL_VARIABLE} sets it, else {DEFAULT_URL})",
    )
    parser.add_argument("--api-key", default=os.environ.get(KEY_VARIABLE), help="API key (sent as Bearer)")
    parser.add_argument(
        "--timeout", type=positive_seconds, default=60.0, help="seconds per HTTP request, > 0 (default: 60)"
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_int,
        default=None,
        help="give up after this many attempts (>= 1) while the service is down or busy "
        "(default: 5 for references/inspect, unlimited for watch)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every retry and frame in detail")
    sub = parser.add_subparsers(dest="command", required=True)

    refs = sub.add_parser("references", help="upload 1-16 good images of a product (replaces its references)")
    refs.add_argument("--product", type=product_id, required=True, help="product id")
    refs.add_argument("files", nargs="+", type=Path, metavar="FILE")

    inspect = sub.add_parser("inspect", help="inspect image files; one JSON line per image on stdout")
    inspect.add_argument(
        "--product", type=product_id, required=True, help="product id (its references must be uploaded)"
    )
    inspect.add_argument("--out", type=Path, help="also write <stem>.json and <stem>.mask.png here")
    inspect.add_argument("--batch", type=positive_int, default=8, help="images per request, >= 1 (default: 8)")
    inspect.add_argument("--save-map", action="store_true", help="also write the heat map <stem>.map.png")
    inspect.add_argument("files", nargs="+", type=Path, metavar="FILE")

    watch = sub.add_parser(
        "watch",
        help="post every new image in DIR once; results into --out",
        epilog=WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument(
        "dir",
        type=Path,
        metavar="DIR",
        help="existing folder the camera writes images into; with --camera, its spool folder (created if missing)",
    )
    watch.add_argument("--product", type=product_id, required=True, help="product id (its references must be uploaded)")
    watch.add_argument("--out", type=Path, required=True, help="folder for <stem>.json, <stem>.mask.png")
    watch.add_argument("--journal", type=Path, help=f"record of finished frames (default: OUT/{JOURNAL_NAME})")
    watch.add_argument("--poll", type=float, default=0.5, help="seconds between folder scans (default: 0.5)")
    watch.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_S,
        metavar="SECONDS",
        help=f"send a file once it stayed unchanged this long (default: {DEFAULT_SETTLE_S:g})",
    )
    watch.add_argument(
        "--once",
        action="store_true",
        help="send what is in DIR now, then exit (status 1 if any file was rejected or could not be read)",
    )
    watch.add_argument(
        "--delete-sent", action="store_true", help="delete each image once its result is saved (rejected ones stay)"
    )
    watch.add_argument("--save-map", action="store_true", help="also write the heat map <stem>.map.png")
    watch.add_argument("--camera", metavar="SOURCE", help="capture into DIR from a camera: index (0) or URL (rtsp://)")
    watch.add_argument("--fps", type=float, default=2.0, help="camera frames per second at most (default: 2)")
    return parser


def read_uploads(files: Sequence[Path]) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file; raises UsageError naming the paths that are not files."""
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise UsageError(f"not a file: {', '.join(missing)}")
    return [(path.name, path.read_bytes()) for path in files]


def folder_problem(folder: Path, err: OSError) -> str:
    """Why `folder` could not be created: the plain file in its way (itself or a parent), else the OS's reason."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                return f"{part} is a file, not a folder"
            break
    return err.strerror or str(err)


def output_folder(folder: Path, save_map: bool) -> OutputFolder:
    """The --out folder, created if missing; raises UsageError naming it when it cannot be (a plain file is there or
    above it, no permission)."""
    try:
        return OutputFolder(folder, save_map=save_map)
    except OSError as err:
        raise UsageError(
            f"--out {folder}: cannot use it as the results folder ({folder_problem(folder, err)})"
        ) from None


def watched_folder(folder: Path, camera: str | None) -> Path:
    """DIR of `watch`: it must be an existing folder, as a camera or a transfer writes into it; with --camera it is
    the camera's spool folder and is created if missing. Raises UsageError naming it otherwise."""
    if camera:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            problem = folder_problem(folder, err)
            raise UsageError(f"{folder}: cannot use it as the camera's spool folder ({problem})") from None
    elif not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"watch folder {folder} {what} (a typo? only --camera creates DIR)")
    return folder


def same_folder(first: Path, second: Path) -> bool:
    """Whether two paths name one folder (through links, or letter case on a case-insensitive disk)."""
    try:
        return first.resolve() == second.resolve() or (first.exists() and os.path.samefile(first, second))
    except OSError:
        return False


def check_not_self_feeding(folder: Path, out: Path, journal: Path) -> None:
    """Raises UsageError when `watch` would send its own files as frames: --out is DIR (its <stem>.mask.png files
    are images), or --journal lies in DIR under an image name. A folder inside DIR is fine: DIR is scanned alone,
    not its subfolders."""
    if same_folder(out, folder):
        raise UsageError(
            f"--out {out} is the watched folder: its result images (<stem>.mask.png) would be sent as frames; "
            "use another folder (a subfolder of DIR is fine)"
        )
    if same_folder(journal.parent, folder) and is_frame_name(journal.name):
        raise UsageError(
            f"--journal {journal} lies in the watched folder under an image name, so it would be sent as a frame; "
            "use another name (such as journal.sqlite3) or folder"
        )


def open_journal(path: Path) -> Journal:
    """The journal at `path`; raises UsageError naming it when it cannot be opened."""
    try:
        return Journal(path)
    except OSError as err:
        raise UsageError(f"journal {path}: cannot open it ({folder_problem(path.parent, err)})") from None
    except sqlite3.Error as err:
        raise UsageError(f"journal {path}: cannot open it ({err})") from None


def batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    """Consecutive slices of `items` of at most `size` each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def unique_stems(files: Sequence[Path]) -> dict[Path, str]:
    """Output stems for files given on one command line: `000`, then `000-2`, ... for repeated names."""
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for path in files:
        stem = base = safe_stem(path.name)
        suffix = 1
        while stem in used:
            suffix += 1
            stem = f"{base}-{suffix}"
        stems[path] = stem
        used.add(stem)
    return stems


def run_references(api: InspectApi, args: argparse.Namespace) -> int:
    """Upload the files as the product's references and print the service's answer as JSON; returns 0."""
    print(json.dumps(api.upload_references(args.product, read_uploads(args.files))))
    return 0


@dataclass
class Outcome:
    """What became of one file given to `inspect`: a result, or an error (rejected, or unreadable)."""

    path: Path
    response: dict[str, Any] | None = None  # the whole answer: product_id, reference_version
    result: dict[str, Any] | None = None
    error: str | None = None
    status: int | None = None


def inspect_group(api: InspectApi, product: str, group: Sequence[Path]) -> list[Outcome]:
    """One request for the group. If the service rejects it, one request per file: a bad file is rejected alone,
    under its own name, and the others still get their results."""
    outcomes: dict[Path, Outcome] = {}
    uploads: list[tuple[Path, bytes]] = []
    for path in group:
        try:
            uploads.append((path, path.read_bytes()))
        except OSError as err:
            outcomes[path] = Outcome(path, error=f"cannot read {display_name(str(path))}: {err.strerror or err}")
    try:
        if uploads:
            response = api.inspect(product, [(path.name, data) for path, data in uploads])
            for (path, _), result in zip(uploads, response["results"], strict=True):
                outcomes[path] = Outcome(path, response, result)
    except FrameError as err:
        if len(uploads) == 1:
            outcomes[uploads[0][0]] = Outcome(uploads[0][0], error=str(err), status=err.status)
        else:
            for path, _ in uploads:
                [outcomes[path]] = inspect_group(api, product, [path])
    return [outcomes[path] for path in group]


def run_inspect(api: InspectApi, args: argparse.Namespace) -> int:
    """Inspect the files in batches, print one JSON line per file and write result files with --out; returns 1 if any
    file failed, else 0."""
    outputs = output_folder(args.out, args.save_map) if args.out else None
    stems = unique_stems(args.files)
    failed = 0
    with tqdm(total=len(args.files), unit="img", disable=None, file=sys.stderr) as progress:
        for group in batches(args.files, args.batch):
            for outcome in inspect_group(api, args.product, group):
                file = display_name(str(outcome.path))
                source = {"file": file, "key": display_name(outcome.path.name)}
                if outcome.result is not None:
                    if outputs:
                        outputs.write_result(stems[outcome.path], source, outcome.response or {}, outcome.result)
                    line = summary(outcome.result)
                else:
                    failed += 1
                    log.error("%s: %s", file, outcome.error)
                    if outputs:
                        outputs.write_error(stems[outcome.path], source, outcome.error or "", outcome.status)
                    line = {"error": outcome.error, "status": outcome.status}
                print(json.dumps({"file": file, **line}), flush=True)
            progress.update(len(group))
    return 1 if failed else 0


def run_watch(api: InspectApi, args: argparse.Namespace, stop: threading.Event) -> int:
    """Watch the folder (with an optional camera feeding it) until stopped or, with --once, done; returns 1 when --once
    saw a rejected or unreadable frame or the camera failed, else 0. Raises UsageError for a DIR, --out or --journal
    that cannot be used, before any request."""
    watched_folder(args.dir, args.camera)
    journal_path = args.journal or args.out / JOURNAL_NAME
    check_not_self_feeding(args.dir, args.out, journal_path)
    outputs = output_folder(args.out, args.save_map)
    journal = open_journal(journal_path)
    camera = CameraSpooler(args.camera, args.dir, stop, fps=args.fps) if args.camera else None
    if camera:
        camera.start()
    log.info("watching %s for product %r; results in %s (journal %s)", args.dir, args.product, args.out, journal.path)
    try:
        counts = watch_folder(
            FrameSender(api, args.product, outputs, journal),
            args.dir,
            stop,
            poll_s=args.poll,
            once=args.once and camera is None,
            delete_sent=args.delete_sent,
            settle_s=args.settle,
        )
    finally:
        stop.set()
        if camera:
            camera.join(timeout=5)
        journal.close()
    log.info("stopped: %s", ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing sent")
    rejected = args.once and counts.get("rejected", 0) + counts.get("failed", 0) > 0
    return 1 if rejected or (camera and camera.error) else 0


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and the first Ctrl-C finish the frame in hand and exit; a second Ctrl-C interrupts at once."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("stopping after the current frame (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def renamed_variables(environ: Mapping[str, str]) -> str:
    """What to say when the environment still sets the client's old variable names ("" when it does not): they
    were one letter away from the service's DCPSFR_API_KEYS."""
    old = [name for name in RENAMED_VARIABLES if name in environ]
    if not old:
        return ""
    moves = ", ".join(f"{name} -> {RENAMED_VARIABLES[name]}" for name in old)
    return f"the client's environment variables were renamed ({moves}); the service's keys are DCPSFR_API_KEYS"


def main(argv: list[str] | None = None) -> int:
    """Run `python -m service.client`; returns the subcommand's status, 2 for a usage error (argparse exits 2 itself),
    a camera or a 401/403/404 error, 1 for other API errors, 0 when stopped while waiting to retry."""
    args = build_parser().parse_args(argv)
    renamed = renamed_variables(os.environ)
    if renamed:
        print(f"error: {renamed}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.INFO if args.verbose else logging.WARNING)
    stop = threading.Event()
    default_attempts = None if args.command == "watch" else 5
    retry = RetryPolicy(max_attempts=args.max_attempts if args.max_attempts is not None else default_attempts)
    try:
        with InspectApi(args.url, args.api_key, timeout_s=args.timeout, retry=retry, stop=stop) as api:
            if args.command == "references":
                return run_references(api, args)
            if args.command == "inspect":
                return run_inspect(api, args)
            stop_on_signals(stop)
            return run_watch(api, args, stop)
    except (CameraUnavailable, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Stopped:
        return 0
    except ApiError as err:
        print(f"error: {args.url}: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigurationError) else 1  # as the epilog says: misconfiguration is 2

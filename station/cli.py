"""`python -m station`: the line-side station (PLC handshake, camera, inspection service)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from station.camera import CameraFailed
from station.codes import DESCRIPTIONS
from station.config import ConfigError, load_config

EPILOG = """examples:
  python -m station run --config /etc/station/station.yaml
  python -m station check --config station.yaml     (check the file and exit)
  python -m station codes                            (the error code table)

the configuration: station/station.example.yaml; the PLC's register map: docs/plc.md.
exit status: 0 stopped by SIGTERM/SIGINT (the part in progress finished); 2 a configuration, camera or port
that cannot be used (each problem on its own line)."""


def parser() -> argparse.ArgumentParser:
    """The command line."""
    main = argparse.ArgumentParser(
        prog="python -m station",
        description="Line-side inspection station: a PLC triggers, the station takes a frame, asks the "
        "inspection service, and answers OK / NG / ERROR within the reject window.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the station until SIGTERM"), ("check", "check the configuration and exit")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", type=Path, required=True, help="the station's YAML file")
        command.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    commands.add_parser("codes", help="print the error code table")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """The command's exit status."""
    args = parser().parse_args(argv)
    if args.command == "codes":
        for code, text in DESCRIPTIONS.items():
            print(f"{int(code):3d}  {code.name:<20} {text}")
        return 0
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print("\n".join(f"error: {line}" for line in err.lines), file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.config}: ok")
        return 0
    from station.run import run  # the protocol libraries only when running

    try:
        return run(config)
    except (CameraFailed, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

"""`python -m model.training`: the index of the training commands; `python -m model.training COMMAND ARGS...` runs
`python -m model.training.COMMAND ARGS...`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "train": "train the product-agnostic heads on a dataset",
    "evaluate": "k-shot evaluation on MVTec AD / VisA: the seven metrics per category, over shots and seeds",
    "reproduce": "the paper's table end to end: datasets, training, evaluation (`make reproduce`)",
    "data": "datasets: fetch MVTec AD or VisA, write a synthetic one, check a layout",
}


def usage() -> str:
    """The index: each command with one line, and how to get its own help."""
    lines = ["usage: python -m model.training COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {what}" for name, what in COMMANDS.items()]
    lines += [
        "",
        "each command's options: python -m model.training COMMAND --help (or python -m model.training.COMMAND)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the index (0 when asked for with no argument or --help), run COMMAND's own main with the rest, or
    exit 2 naming an unknown command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"{usage()}\n\nerror: unknown command {command!r}: choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(
        f"model.training.{command}" if command != "data" else "model.training.data.__main__"
    )
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())

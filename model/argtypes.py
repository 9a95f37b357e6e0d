"""argparse types shared by every command line of the project: the model's, the service's and the camera client's.

Standard library only: the camera client imports this module without loading torch or the rest of the model.
"""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (epochs, shots, batch sizes, attempts); a usage error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: must be at least 1")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is out of range: must be a number of seconds > 0")
    return value


def tcp_port(text: str) -> int:
    """argparse type: an integer in 0..65535 (a usage error otherwise, not a traceback from bind())."""
    port = int(text) if text.lstrip("-").isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0..65535)")
    return port

"""What the service accepts, for the service and its camera client alike: the image formats (checked on the
decoded header; the client picks up only files with these suffixes) and the product-id pattern (the client
refuses a bad `--product` before any request). Standard library only, so the client stays light."""

from __future__ import annotations

import re

PRODUCT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PRODUCT_ID_TEXT = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
TAG_TEXT = r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$"  # a part tag: 1-128 printable ASCII, no edge blanks
TAG_TEXT_MEANING = (
    "1-128 printable ASCII characters (no accents, tabs or line breaks), without leading or trailing spaces"
)

ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "TIFF": "TIFF"}  # Pillow's -> ours
ACCEPTED_NAMES = "PNG, JPEG, BMP or TIFF"
PNG_START, JPEG_START, BMP_START, TIFF_STARTS = b"\x89PNG", b"\xff\xd8", b"BM", (b"II*\x00", b"MM\x00*")
# leading bytes of the accepted formats: a file that starts like one but does not open is damaged (400), not foreign
SIGNATURES = (PNG_START, JPEG_START, BMP_START, *TIFF_STARTS)
ACCEPTED_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".bmp", ".tif", ".tiff"})


def has_accepted_suffix(name: str) -> bool:
    """Whether a file name ends in a suffix of an accepted format (case-insensitive)."""
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in ACCEPTED_SUFFIXES

"""Uploaded bytes -> a checked, decoded Frame as the camera meant it.

Decoding order: identify the format from the header, refuse formats we do not accept (415) and images over
the pixel limit (413) before any pixel is decoded (decompression bombs), then decode (400 if that fails).
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from model import Frame, OutsideSixteenBits, Pixels, is_high_bit, pixels_size, sixteen_bit_grey, to_rgb_array
from service.errors import BadImage, ServiceError, TooLarge, UnsupportedImage
from service.imaging.formats import ACCEPTED_FORMATS, SIGNATURES, TIFF_STARTS
from service.imaging.sixteen_bit import sixteen_bit_colour

EXIF_ORIENTATION = 0x0112
DECODE_SHORT_SIDE = 2048  # frames are decoded/reduced to at least this shorter side (4.5x the 448 backbone)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_BITS, TIFF_SAMPLES, TIFF_SAMPLE_FORMAT = 258, 277, 339  # tags: BitsPerSample, SamplesPerPixel, SampleFormat
TIFF_PHOTOMETRIC, TIFF_PLANAR, TIFF_EXTRA_SAMPLES = 262, 284, 338  # PhotometricInterpretation, PlanarConfiguration
TIFF_ADVICE = "save it with interleaved samples and unassociated alpha, or as a 16-bit PNG"
TIFF_RGB, TIFF_PREMULTIPLIED = 2, 1  # PhotometricInterpretation RGB; ExtraSamples' associated (premultiplied) alpha
PNG_DEPTH_AT, PNG_COLOUR_TYPE_AT = 24, 25  # the IHDR's bytes: signature 8, chunk length and type 8, width, height
PNG_GREY_ALPHA = 4  # PNG colour type
SBIT_COLOUR_BYTES = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}  # PNG colour type -> sBIT's leading bytes that describe colour
SINGLE_IMAGE_PAGES = ("MPO",)  # formats whose first page is the image: an MPO's others are its MPF thumbnails/views
PNG_TEXT_CHUNK, PNG_TEXT_MEMORY = PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY  # Pillow's own


def configure_decoding(max_upload_bytes: int) -> None:
    """Let PNG metadata be as large as an upload may be (`DCPSFR_MAX_UPLOAD_BYTES`): Pillow refuses an ICC profile,
    XMP packet or text chunk over 1 MiB decompressed, and workstation exports write 2 MB ones that OpenCV reads.
    Metadata only: the pixel limits, read from the header before any pixel is decoded, still guard against
    decompression bombs, and a chunk still cannot decompress beyond the upload limit. Called once, by create_app."""
    PngImagePlugin.MAX_TEXT_CHUNK = max(PNG_TEXT_CHUNK, max_upload_bytes)
    PngImagePlugin.MAX_TEXT_MEMORY = max(PNG_TEXT_MEMORY, max_upload_bytes)


class SampleFormat(NamedTuple):
    """A TIFF's BitsPerSample, SampleFormat (1 unsigned integer, 2 signed integer, 3 float), SamplesPerPixel."""

    bits: int
    kind: int
    samples: int

    def __str__(self) -> str:
        """'signed 16-bit integer', '32-bit float, 3 samples per pixel', ..."""
        names = {
            1: f"unsigned {self.bits}-bit integer",
            2: f"signed {self.bits}-bit integer",
            3: f"{self.bits}-bit float",
        }
        name = names.get(self.kind, f"{self.bits}-bit, SampleFormat {self.kind}")
        return name if self.samples == 1 else f"{name}, {self.samples} samples per pixel"


class OpenedImage(NamedTuple):
    """An image whose header was read (`open_image`): format and size known, no pixels decoded yet."""

    image: Image.Image
    significant_bits: int | None  # from a PNG's sBIT chunk (Pillow does not read it)
    data: bytes = b""  # the file (OpenCV reads 16-bit colour from it)


def decode_image(data: bytes, name: str, max_pixels: int) -> Frame:
    """One uploaded file -> a Frame as the camera meant it, or a ServiceError that says what is wrong.

    - 8-bit data of any mode -> RGB (an alpha channel that is zero everywhere is ignored); high-bit data stays
      16-bit so the model scales it by its real bit depth (PNG sBIT, else the product's): grey as "I;16", colour
      (16-bit RGB/RGBA PNG or TIFF, which Pillow reads as 8-bit: OpenCV reads its samples) as an (H, W, 3) uint16
      array.
    - EXIF orientation is applied: width, height and the map follow the image as displayed.
    - Frames with a shorter side of 2 x DECODE_SHORT_SIDE or more are decoded reduced to `reduced_size` (an integer
      box reduction; a JPEG is first DCT-scaled by `draft` to at least that size, ~4x faster, within a grey level
      or two of a full decode); the Frame keeps the camera size, and the map comes back at it.
    - A multi-page file (TIFF, an animated PNG) is refused (415) from its header: only its first page would be seen,
      silently. An MPO (a camera JPEG with an MPF index) is its primary image, as every JPEG reader shows it: its
      other pages are thumbnails or other views of it.
    - Grey data that has no true 8- or 16-bit reading is refused (415): integer pixels outside 0..65535, float
      pixels outside 0..1 and 0..255 or NaN/inf, and TIFF sample formats Pillow does not read (float RGB, 64-bit).

    Whatever Pillow (or OpenCV, for 16-bit colour) raises while reading the header or the pixels (OSError,
    SyntaxError, ValueError, struct.error, EOFError, ...) becomes a 400: the pixels are decoded in full here
    (`load()`), never lazily later, and `ImageFile.LOAD_TRUNCATED_IMAGES` stays False so a cut file is an error,
    not a grey-padded frame.
    """
    return decode_opened(open_image(data, name, max_pixels), name)


def open_image(data: bytes, name: str, max_pixels: int) -> OpenedImage:
    """Read only the header: the format (415 if not accepted) and the size (413 over `max_pixels`); no pixels."""
    if not data:
        raise BadImage(f"{name}: the file is empty (0 bytes); it does not decode")
    with _undecodable(name, "image"):
        image = _open(data, name, max_pixels)
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"{name}: {image.format} images are not accepted (use PNG, JPEG, BMP or TIFF)")
    with _undecodable(name, image.format):
        width, height = image.size
        pages = getattr(image, "n_frames", 1)
    if width * height > max_pixels:
        raise TooLarge(
            f"{name}: {width} x {height} = {width * height} pixels, more than the limit of {max_pixels} "
            "(DCPSFR_MAX_PIXELS)"
        )
    if pages > 1 and image.format not in SINGLE_IMAGE_PAGES:
        raise UnsupportedImage(
            f"{name}: a {pages}-page {image.format}; send each page as its own image (one frame per file)"
        )
    return OpenedImage(image, png_significant_bits(data), data)


def decode_opened(opened: OpenedImage, name: str) -> Frame:
    """The pixels of an image from `open_image`, decoded in full (400 if they do not decode); see decode_image."""
    with _undecodable(name, opened.image.format):
        return _pixels(opened, name)


def _pixels(opened: OpenedImage, name: str) -> Frame:
    """Full decode (reduced where large), EXIF orientation, then RGB, 16-bit grey or 16-bit colour.

    Memory: one full-size decoded copy at most (RGB frames are reduced before anything else copies them); 16-bit
    colour also has Pillow's 8-bit reading beside OpenCV's.
    """
    image = opened.image
    camera_size = image.size
    samples = _sample_format(image)  # from the file's tags: a transposed copy has none
    wide = _sixteen_bit_channels(image, opened.data, samples, name)
    if image.format in ("JPEG", "MPO") and reduced_size(camera_size) != camera_size:
        image.draft("RGB", reduced_size(camera_size))  # DCT scaling by 1/2, 1/4 or 1/8, to at least that size
    image.load()  # also for 16-bit colour: Pillow checks the whole file and reads a PNG's eXIf after its pixels
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps width and height
        camera_size = camera_size[::-1]
    decoded: Pixels
    if wide:
        decoded = sixteen_bit_colour(opened.data, image.format, wide, camera_size, orientation)
    else:
        image = ImageOps.exif_transpose(image) if orientation != 1 else image
        decoded = _pillow_pixels(image, samples, name)
    if isinstance(decoded, Image.Image):
        decoded.info = {}  # no stale EXIF/ICC
    bits = opened.significant_bits if is_high_bit(decoded) else None
    return Frame(
        reduced(decoded, camera_size=camera_size), camera_size=tuple(camera_size), significant_bits=bits or None
    )


def _pillow_pixels(image: Image.Image, samples: SampleFormat | None, name: str) -> Pixels:
    """A decoded Pillow image (but 16-bit colour) -> RGB, or high-bit grey as "I;16"."""
    if image.mode == "RGB":
        return image
    if is_high_bit(image):
        described = str(samples) if samples else f"integer (mode {image.mode})"
        return Image.fromarray(_sixteen_bit_grey(_grey_values(image, samples), name, described))
    if image.mode == "F":
        return Image.fromarray(_float_grey(image, name))
    return Image.fromarray(to_rgb_array(image))  # (H, W, 3) uint8; checked here, not in a batch


def reduced_size(size: tuple[int, int], short_side: int = DECODE_SHORT_SIDE) -> tuple[int, int]:
    """(W, H) of a W x H image box-reduced by the largest integer factor that keeps its shorter side >= `short_side`
    (the size itself when that factor is 1)."""
    factor = min(size) // short_side
    return size if factor < 2 else (size[0] // factor, size[1] // factor)


def reduced(image: Pixels, short_side: int = DECODE_SHORT_SIDE, camera_size: tuple[int, int] | None = None) -> Pixels:
    """A large image box-reduced by an integer factor, its shorter side kept >= `short_side`; an image decoded
    smaller than its `camera_size` (JPEG DCT scaling) ends at `reduced_size(camera_size)`, as any other decode."""
    target = reduced_size(tuple(camera_size or pixels_size(image)), short_side)
    if target == pixels_size(image):
        return image
    if isinstance(image, np.ndarray):  # 16-bit colour: (H, W, 3) uint16 (never DCT-scaled)
        factor = min(pixels_size(image)) // short_side
        height, width = image.shape[0] // factor, image.shape[1] // factor
        blocks = image[: height * factor, : width * factor].reshape(height, factor, width, factor, 3)
        return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint16)  # (h, w, 3)
    return image.resize(target, Image.Resampling.BOX)


def _sixteen_bit_channels(image: Image.Image, data: bytes, samples: SampleFormat | None, name: str) -> str | None:
    """The channels ("RGB", "RGBA" or "LA": grey + alpha) of 16-bit colour that Pillow would read as 8-bit RGB(A),
    from the header before any pixel is read; None for everything else (Pillow reads it as it is). Raises
    UnsupportedImage for 16-bit colour TIFF layouts neither library reads exactly (they would lose bits)."""
    if image.mode not in ("RGB", "RGBA"):
        return None
    if image.format == "PNG" and data[PNG_DEPTH_AT] == 16:
        return "LA" if data[PNG_COLOUR_TYPE_AT] == PNG_GREY_ALPHA else image.mode
    if image.format != "TIFF" or samples is None or (samples.bits, samples.kind) != (16, 1):
        return None
    tags = image.tag_v2
    if tags.get(TIFF_PHOTOMETRIC) != TIFF_RGB:
        return None
    extra = tags.get(TIFF_EXTRA_SAMPLES, ())
    if TIFF_PREMULTIPLIED in (extra if isinstance(extra, tuple) else (extra,)):
        raise UnsupportedImage(f"{name}: a 16-bit colour TIFF with premultiplied alpha; {TIFF_ADVICE}")
    if tags.get(TIFF_PLANAR, 1) != 1:  # Pillow keeps 8 of its 16 bits, OpenCV reads the planes as interleaved
        raise UnsupportedImage(f"{name}: a 16-bit colour TIFF with separate colour planes; {TIFF_ADVICE}")
    return image.mode


def png_significant_bits(data: bytes) -> int | None:
    """Bits of real data per sample from a PNG's `sBIT` chunk (the largest of its colour channels: grey, or red,
    green and blue; alpha aside), or None."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    colour_bytes = SBIT_COLOUR_BYTES.get(data[PNG_COLOUR_TYPE_AT], 1) if len(data) > PNG_COLOUR_TYPE_AT else 1
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        count = min(length, colour_bytes)
        if kind == b"sBIT" and count >= 1 and pos + 8 + count <= len(data):
            return max(data[pos + 8 : pos + 8 + count])
        if kind in (b"IDAT", b"IEND"):
            return None  # sBIT must come before the pixel data
        pos += 12 + length
    return None


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # beyond Pillow's own limit: name ours, not Pillow's
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{found.group(1)} pixels" if found else "its header's size"
        raise TooLarge(
            f"{name}: {pixels}, more than the limit of {max_pixels} (DCPSFR_MAX_PIXELS); refused before decoding"
        ) from None
    except UnidentifiedImageError:
        unreadable = tiff_sample_format(data) if data.startswith(TIFF_STARTS) else None
        if unreadable:  # a whole TIFF directory Pillow has no mode for: float RGB, 64-bit, ...
            raise UnsupportedImage(
                f"{name}: this TIFF's sample format ({unreadable}) is not supported; convert it to 8- or 16-bit "
                "integers"
            ) from None
        if data.startswith(SIGNATURES):  # Pillow says "unidentified" for a PNG/BMP cut inside its header
            raise BadImage(f"{name}: the header is cut or damaged; the file does not decode") from None
        raise UnsupportedImage(f"{name}: not an image (accepted formats: PNG, JPEG, BMP, TIFF)") from None


def _sixteen_bit_grey(grey: np.ndarray, name: str, samples: str) -> np.ndarray:
    """`model.sixteen_bit_grey`, its refusal as a 415 naming the upload."""
    try:
        return sixteen_bit_grey(grey)
    except OutsideSixteenBits as err:
        raise UnsupportedImage(
            f"{name}: {samples} pixels from {err.low} to {err.high}; the service takes 8- or 16-bit images "
            "(values 0..65535): convert the frame to 16 bits, scaled as every frame of this product is"
        ) from None


def _float_grey(image: Image.Image, name: str) -> np.ndarray:
    """(H, W, 3) uint8 from float grey (mode F) within 0..1 or 0..255; anything else is refused (415)."""
    try:
        return to_rgb_array(image)
    except ValueError as err:  # float_full_scale: the values have no true 8-bit reading
        raise UnsupportedImage(f"{name}: {err}") from None


def _grey_values(image: Image.Image, samples: SampleFormat | None) -> np.ndarray:
    """(H, W) values of high-bit grey; Pillow reads unsigned 32-bit TIFFs as signed (values >= 2**31 wrap)."""
    grey = np.asarray(image)
    if samples == SampleFormat(bits=32, kind=1, samples=1) and grey.dtype == np.int32:
        return grey.view(np.uint32)
    return grey


def _sample_format(image: Image.Image) -> SampleFormat | None:
    """The sample format a TIFF's tags give (Pillow's `tag_v2`); None for other formats."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or tags is None or TIFF_BITS not in tags:
        return None
    return SampleFormat(
        _first(tags[TIFF_BITS]), _first(tags.get(TIFF_SAMPLE_FORMAT, 1)), _first(tags.get(TIFF_SAMPLES, 1))
    )


def _first(value: object) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


def tiff_sample_format(data: bytes) -> SampleFormat | None:
    """The first page's sample format read from a classic TIFF's header, or None
    when its first directory does not lie whole in `data` (a cut or damaged header)."""
    order = {TIFF_STARTS[0]: "<", TIFF_STARTS[1]: ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    (start,) = struct.unpack(order + "I", data[4:8])
    if start + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[start : start + 2])
    if count == 0 or start + 2 + 12 * count + 4 > len(data):
        return None
    tags = {}
    for entry in range(start + 2, start + 2 + 12 * count, 12):
        tag, kind, values, value = struct.unpack(order + "HHI4s", data[entry : entry + 12])
        if tag in (TIFF_BITS, TIFF_SAMPLES, TIFF_SAMPLE_FORMAT) and kind in (3, 4) and values:  # SHORT or LONG
            tags[tag] = _first_value(data, order, kind, values, value)
    if TIFF_BITS not in tags or None in tags.values():
        return None
    return SampleFormat(tags[TIFF_BITS], tags.get(TIFF_SAMPLE_FORMAT, 1), tags.get(TIFF_SAMPLES, 1))


def _first_value(data: bytes, order: str, kind: int, values: int, value: bytes) -> int | None:
    """A SHORT (3) or LONG (4) tag's first value: in the entry when all its values fit its 4 bytes, else at the
    offset the entry holds; None when that offset is past the data."""
    size, fmt = (2, order + "H") if kind == 3 else (4, order + "I")
    if size * values <= 4:
        return struct.unpack(fmt, value[:size])[0]
    (offset,) = struct.unpack(order + "I", value)
    if offset + size > len(data):
        return None
    return struct.unpack(fmt, data[offset : offset + size])[0]


@contextlib.contextmanager
def _undecodable(name: str, kind: str) -> Iterator[None]:
    """Any exception but our own ServiceErrors -> BadImage (400): Pillow raises many kinds for broken files."""
    try:
        yield
    except ServiceError:
        raise
    except Exception as err:  # whatever the codec raised, the upload is undecodable
        raise BadImage(f"{name}: this {kind} file does not decode ({type(err).__name__}: {err})") from None

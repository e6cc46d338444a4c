"""Image decoding that survives real folders.

Every way a file can be unusable becomes an ``ImageReadError`` with a one-line reason, so the pipeline can write an
``error`` row and go on. Dimensions are read from the header before decoding, so a decompression bomb (a tiny file
declaring a gigantic image) is refused before any pixel memory is allocated.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# OpenCV's own guard, as a second line behind our header check; must be set before cv2 is first imported.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 30))

import cv2  # noqa: E402

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: far above a microscope field, far below a bomb
# allscan run segments and renders on a copy whose longest side is at most this: the model sees 224 px anyway,
# and a 100-megapixel field would otherwise take minutes and gigabytes (README "Large images").
WORKING_SIDE = 2048
_MAX_TIFF_PAGES = 10_000  # an IFD chain longer than this is damaged (or a loop); counting stops there
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


class ImageReadError(Exception):
    """The file cannot be used as an image; ``str(exc)`` is the one-line reason."""


@dataclass
class DecodedImage:
    """An image as 8-bit BGR pixels (OpenCV's order), plus what was done to get there."""

    bgr: np.ndarray
    notes: list[str] = field(default_factory=list)
    original: tuple[int, int] | None = None  # (width, height) of the file when ``bgr`` is a downscaled copy

    @property
    def height(self) -> int:
        """The file's height (after EXIF orientation), whatever the size of ``bgr``."""
        return self.original[1] if self.original else int(self.bgr.shape[0])

    @property
    def width(self) -> int:
        """The file's width (after EXIF orientation), whatever the size of ``bgr``."""
        return self.original[0] if self.original else int(self.bgr.shape[1])

    @property
    def scale(self) -> float:
        """Original pixels per pixel of ``bgr`` (1.0 unless downscaled)."""
        return self.width / self.bgr.shape[1]


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from the first SOF marker, or None."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if i + 4 > n:
            return None
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 10 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height, data[i + 9]
        i += 2 + seg_len
    return None


def _png_size(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from IHDR, or None."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[24], data[25]


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first IFD of a classic TIFF, or None."""
    if len(data) < 8:
        return None
    endian = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(endian + "I", data[4:8])
        (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
        width = height = None
        for k in range(count):
            entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
            tag, typ = struct.unpack(endian + "HH", entry[:4])
            value = struct.unpack(endian + ("H" if typ == 3 else "I"), entry[8:10] if typ == 3 else entry[8:12])[0]
            if tag == 256:
                width = value
            elif tag == 257:
                height = value
        if width and height:
            return width, height
    except (struct.error, IndexError):
        return None
    return None


def tiff_pages(data: bytes) -> int:
    """How many pages (IFDs) a classic TIFF holds, following the chain of next-IFD offsets; 0 if unreadable.

    OpenCV's ``imdecode`` returns the first page only, so the caller can say that the others were not read."""
    if len(data) < 8:
        return 0
    endian = "<" if data[:2] == b"II" else ">"
    seen: set[int] = set()
    try:
        (offset,) = struct.unpack(endian + "I", data[4:8])
        while offset and offset not in seen and len(seen) < _MAX_TIFF_PAGES:
            (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
            start = offset + 2 + 12 * count
            (following,) = struct.unpack(endian + "I", data[start : start + 4])
            seen.add(offset)  # only an IFD read to its end is a page
            offset = following
    except struct.error:
        pass  # a damaged tail: the pages counted so far
    return len(seen)


def sniff_format(data: bytes) -> str | None:
    """The container format from its magic bytes: 'jpeg', 'png', 'tiff' or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def decode_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> DecodedImage:
    """Read ``path`` into 8-bit BGR with EXIF orientation applied, or raise ImageReadError with the reason.

    With ``max_side``, an image whose longest side is longer comes back downscaled to exactly ``max_side``
    (see :func:`decode_bytes`)."""
    try:
        data = Path(path).read_bytes()
    except PermissionError as exc:
        raise ImageReadError(f"permission denied: {exc.strerror}") from exc
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from exc
    return decode_bytes(data, max_pixels=max_pixels, max_side=max_side)


def decode_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> DecodedImage:
    """Decode an in-memory file; see :func:`decode_image`."""
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageReadError("not an image: unrecognised file signature (expected JPEG, PNG or TIFF)")
    size, notes = _header(fmt, data)
    if size is not None:
        width, height = size[0], size[1]
        if width == 0 or height == 0:
            raise ImageReadError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageReadError(
                f"image too large: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the "
                f"{max_pixels / 1e6:.0f} MP limit (--max-pixels)"
            )
    buffer = np.frombuffer(data, dtype=np.uint8)
    reduce = _jpeg_reduction(size, max_side) if fmt == "jpeg" else 1
    try:
        # IMREAD_COLOR applies EXIF orientation and converts gray, alpha, 16-bit and CMYK to 8-bit BGR;
        # IMREAD_REDUCED_COLOR_k does the same while decoding only 1/k of each side (libjpeg's DCT scaling).
        bgr = cv2.imdecode(buffer, _REDUCED_FLAGS[reduce])
    except cv2.error as exc:
        raise ImageReadError(f"cannot decode {fmt.upper()}: {str(exc).strip().splitlines()[-1]}") from exc
    if bgr is None:
        raise ImageReadError(f"cannot decode {fmt.upper()}: corrupt or unsupported data")
    if size is None and bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise ImageReadError(f"image too large: {bgr.shape[1]}x{bgr.shape[0]} exceeds the limit")
    if fmt == "jpeg" and size is not None and size[2] == 1:
        notes.append("gray_converted")
    original = _oriented_size(size, bgr.shape[:2], reduce) if reduce > 1 and size else None
    return _bounded(DecodedImage(bgr=np.ascontiguousarray(bgr), notes=notes, original=original), max_side)


def _header(fmt: str, data: bytes) -> tuple[tuple[int, ...] | None, list[str]]:
    """The size the header declares (None for an unusual TIFF) and the notes it implies; refuses a damaged one."""
    notes: list[str] = []
    size: tuple[int, ...] | None
    if fmt == "jpeg":
        size = _jpeg_size(data)
        if size is None:
            raise ImageReadError("corrupt JPEG: no frame header")
        if b"\xff\xd9" not in data[-1024:]:
            raise ImageReadError("truncated JPEG: end-of-image marker missing")
        if size[2] == 4:
            notes.append("cmyk_converted")
    elif fmt == "png":
        size = _png_size(data)
        if size is None:
            raise ImageReadError("corrupt PNG: no IHDR header")
        if b"IEND" not in data[-16:]:
            raise ImageReadError("truncated PNG: IEND chunk missing")
        if size[2] == 16:
            notes.append("16bit_converted")
        if size[3] in (4, 6):
            notes.append("alpha_dropped")
        if size[3] in (0, 4):
            notes.append("gray_converted")
    else:
        size = _tiff_size(data)
        pages = tiff_pages(data)
        if pages > 1:
            notes.append(f"multipage_tiff_first_page_of_{pages}")
    return size, notes


_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _jpeg_reduction(size: tuple[int, ...] | None, max_side: int | None) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that still leaves the longest side >= ``max_side``:
    a 100-megapixel JPEG is never decoded at full size, and the final resize is from a few times the target."""
    if not max_side or size is None:
        return 1
    longest = max(size[0], size[1])
    return max((k for k in _REDUCED_FLAGS if -(-longest // k) >= max_side), default=1)


def _oriented_size(size: tuple[int, ...], shape: tuple[int, ...], reduce: int) -> tuple[int, int]:
    """The file's (width, height) after EXIF orientation, from its header and the reduced decode's shape."""
    width, height = size[0], size[1]
    rows = -(-height // reduce)
    return (width, height) if shape[0] == rows else (height, width)


def _bounded(decoded: DecodedImage, max_side: int | None) -> DecodedImage:
    """``decoded`` with its pixels downscaled (area averaging) so the longest side is at most ``max_side``."""
    rows, cols = decoded.bgr.shape[:2]
    if not max_side or max(rows, cols) <= max_side:
        return decoded
    width, height = decoded.width, decoded.height
    ratio = max_side / max(width, height)
    target = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    small = cv2.resize(decoded.bgr, target, interpolation=cv2.INTER_AREA)
    notes = [*decoded.notes, f"downscaled_to_{target[0]}x{target[1]}"]
    return DecodedImage(bgr=small, notes=notes, original=(width, height))

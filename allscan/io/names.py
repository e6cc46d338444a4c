"""File names as text: a lossless rendering of any byte sequence, and output names that fit the file system.

On Linux a file name is bytes, not text: Python decodes it with ``surrogateescape`` (os.fsdecode), so a byte that
is not valid UTF-8 becomes a lone surrogate that SQLite, CSV files and browsers cannot store. :func:`escape_name`
renders such a name as printable text, each undecodable byte as ``\\xNN`` and a backslash as ``\\\\`` (so the
rendering is lossless: :func:`unescape_name` gives the original back, and two different names never render
alike). Valid UTF-8, including line breaks, is kept as it is; the CSV writer quotes it.

An output file named after an input (a heatmap) can be longer than the file system's 255-byte limit once the
``.png`` suffix or the escapes are added; :func:`fit_name` shortens such a name to a prefix plus a hash of the
whole name, so distinct inputs keep distinct outputs.
"""

from __future__ import annotations

import hashlib
import os
import re

# Longest output name component, in bytes: room for the '.<name>.<pid>.tmp' of an atomic write under 255.
MAX_NAME_BYTES = 200
HASH_CHARS = 12
_ESCAPED = re.compile("[\\\\\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNESCAPE = re.compile(r"\\(\\|x[89a-f][0-9a-f])")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return "\\\\" if char == "\\" else f"\\x{ord(char) - 0xDC00:02x}"


def escape_name(name: str) -> str:
    """Printable, lossless text for a name decoded with surrogateescape (undecodable bytes as ``\\xNN``)."""
    return _ESCAPED.sub(_escape_char, name)


def printable(text: str) -> str:
    """``text`` with any lone surrogate shown as ``\\xNN`` (or ``\\uNNNN``): storable anywhere, never an error.
    For messages; names use :func:`escape_name`, which is also lossless."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: _surrogate_text(ord(m.group())), text)


def _surrogate_text(code: int) -> str:
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _unescape_char(match: re.Match[str]) -> str:
    body = match.group(1)
    return "\\" if body == "\\" else chr(0xDC00 + int(body[1:], 16))


def unescape_name(text: str) -> str:
    """The name (as os.fsdecode gives it) that :func:`escape_name` rendered as ``text``."""
    return _UNESCAPE.sub(_unescape_char, text)


def fit_name(name: str, suffix: str = "", limit: int = MAX_NAME_BYTES) -> str:
    """``name + suffix`` if it fits in ``limit`` bytes, else a prefix of ``name``, ``~``, a hash of the whole
    name, then ``suffix`` (cut on a character boundary, so valid UTF-8 stays valid)."""
    if len(os.fsencode(name + suffix)) <= limit:
        return name + suffix
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:HASH_CHARS]
    tail = f"~{digest}{suffix}"
    budget = limit - len(os.fsencode(tail))
    prefix = name[:budget]
    while len(os.fsencode(prefix)) > budget:
        prefix = prefix[:-1]
    return prefix + tail


def heatmap_relpath(slide: str, in_slide: str) -> str:
    """``heatmaps/<slide>/<path in slide>.png``: the image's full name (extension kept, so ``a.jpg`` and ``a.png``
    get ``a.jpg.png`` and ``a.png.png``), each part rendered by :func:`escape_name` and fitted to the file system."""
    parts = [fit_name(escape_name(slide))]
    *folders, file_name = in_slide.split("/")
    parts += [fit_name(escape_name(f)) for f in folders]
    parts.append(fit_name(escape_name(file_name), ".png"))
    return "/".join(["heatmaps", *parts])

"""Discovery: which files are images, and which slide each belongs to.

The brief's rules: a *slide* is a folder directly under an INPUT folder (everything below it belongs to it);
images lying directly in INPUT form a slide named after INPUT; an INPUT may be a single image file (its slide
is the folder it lies in). Hidden files and folders (name starting with ``.``) are skipped. The order is
deterministic: INPUTs in the order given, then the loose-image slide, then slide folders by name; inside a
slide, entries by name at every level, so two runs over the same tree always list the same images in the same
order.

Slides are keyed by INPUT and folder: the same slide name coming from two different folders (two INPUTs that
each hold a ``patientA``) would merge two patients into one slide, so discovery refuses it (a usage error) instead
of guessing names. A folder that holds an allscan journal is a results folder (an earlier ``--out``), never a slide
or part of one: its heatmaps and report would otherwise be read back as images.

One file reached twice (INPUT given as a folder and as a symlink to it, a slide folder that is a symlink to another
slide) is listed once, at its first place: images are told apart by their real paths, and each alias dropped is
noted in ``aliases`` (the run turns it into one warning) instead of counting the same image twice.

A night job must never hang or die on a strange folder: a symlink that leads back into a folder already being
walked, a folder it cannot list and a dangling symlink each become one *problem* entry (reported as an
``error`` row naming the cause) and the walk goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from allscan.io.images import IMAGE_SUFFIXES
from allscan.io.names import escape_name

JOURNAL_NAME = ".allscan-journal.sqlite"  # marks a results folder (pipeline.journal keeps its run journal there)


class DiscoveryError(Exception):
    """An INPUT cannot be used at all (missing, or a file that is not an image); one line for the user."""


@dataclass(frozen=True)
class Found:
    """One discovered image, or one problem found while walking (``error`` set)."""

    slide: str
    image: str  # path relative to its INPUT, '/' separators (a folder problem ends with '/')
    in_slide: str  # path relative to the slide folder, '/' separators: names the heatmap PNG
    path: str  # absolute, normalised path (symlinks not resolved): the journal's key
    size: int = 0
    mtime_ns: int = 0
    error: str = ""
    inode: int = 0  # with ctime_ns: a file replaced in place, its mtime set back, still counts as changed
    ctime_ns: int = 0  # the kernel sets it on every write or rename; no user can set it back


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def is_results_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder that holds an allscan journal: an earlier ``--out``, never input."""
    return os.path.isfile(os.path.join(path, JOURNAL_NAME))


class _SlideNames:
    """Which folder each slide name came from: a second folder under the same name is refused."""

    def __init__(self, aliases: list[str] | None = None) -> None:
        self.source: dict[str, str] = {}
        self.real: dict[str, str] = {}  # real path -> the path it was first listed under
        self.aliases = aliases

    def claim(self, slide: str, folder: str) -> None:
        first = self.source.setdefault(slide, folder)
        if first != folder:
            raise DiscoveryError(
                f"slide name {escape_name(slide)!r} comes from two folders, {escape_name(first)} and "
                f"{escape_name(folder)}: their images would be merged into one slide; rename one folder or run "
                "these INPUTs into separate --out folders"
            )

    def rows(self, slide: str, folder: str, found: Iterator[Found]) -> Iterator[Found]:
        """``found``, claiming the slide name at its first row (a folder without images claims nothing)."""
        for i, item in enumerate(self.unique(found)):
            if i == 0:
                self.claim(slide, folder)
            yield item

    def unique(self, found: Iterator[Found]) -> Iterator[Found]:
        """``found`` without the images whose real path was listed already (symlink aliases)."""
        for item in found:
            if item.error:
                yield item
                continue
            real = os.path.realpath(item.path)
            first = self.real.setdefault(real, item.path)
            if first == item.path:
                yield item
            elif self.aliases is not None:
                self.aliases.append(f"{escape_name(item.path)} is {escape_name(first)}")


def _sorted_entries(folder: str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not _hidden(e.name)), key=lambda e: e.name)


def _file(slide: str, image: str, in_slide: str, path: str) -> Found:
    """Stat one image file (following a symlink); a failure becomes a problem row."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Found(slide, image, in_slide, path, error="broken symlink: target does not exist")
    except OSError as exc:
        return Found(slide, image, in_slide, path, error=f"cannot stat file: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return Found(slide, image, in_slide, path, error="not a regular file")
    return Found(
        slide, image, in_slide, path, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, ctime_ns=st.st_ctime_ns
    )


def _walk_slide(
    folder: str,
    slide: str,
    prefix: str,
    slide_prefix: str,
    ancestors: frozenset[tuple[int, int]],
    exclude: set[str],
) -> Iterator[Found]:
    """Every image under ``folder`` (recursively), in name order; ``ancestors`` detects symlink loops."""
    try:
        entries = _sorted_entries(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        yield Found(slide, prefix, slide_prefix, folder, error=f"cannot list folder: {reason}")
        return
    for entry in entries:
        path = os.path.join(folder, entry.name)
        image, in_slide = prefix + entry.name, slide_prefix + entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            if path in exclude or is_results_folder(path):
                continue
            try:
                st = os.stat(path)
            except OSError as exc:
                yield Found(slide, image + "/", in_slide + "/", path, error=f"cannot open folder: {exc.strerror}")
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in ancestors:
                target = os.readlink(path) if entry.is_symlink() else path
                yield Found(
                    slide,
                    image + "/",
                    in_slide + "/",
                    path,
                    error=f"symlink loop: {target} leads back into itself",
                )
                continue
            yield from _walk_slide(path, slide, image + "/", in_slide + "/", ancestors | {ident}, exclude)
        elif is_image_name(entry.name):
            yield _file(slide, image, in_slide, path)


def _ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def check_inputs(inputs: list[Path]) -> None:
    """Refuse unusable INPUTs before any work starts (a usage error, exit 2)."""
    if not inputs:
        raise DiscoveryError("no INPUT given")
    for inp in inputs:
        if not os.path.exists(inp):
            raise DiscoveryError(f"input not found: {inp}")
        if not os.path.isdir(inp) and not is_image_name(os.fspath(inp)):
            raise DiscoveryError(f"input is neither a folder nor an image file (.jpg, .jpeg, .png, .tif): {inp}")
        if os.path.isdir(inp) and is_results_folder(inp):
            raise DiscoveryError(
                f"input {inp} is an allscan results folder (it holds {JOURNAL_NAME}), not a folder of slides"
            )


def discover(
    inputs: list[Path], exclude: list[Path] | None = None, aliases: list[str] | None = None
) -> Iterator[Found]:
    """Yield every image (and every walk problem) under ``inputs``, slide by slide, in a deterministic order.

    ``exclude`` lists folders never entered (the run's own ``--out`` when it lies inside an INPUT, so heatmap
    PNGs are not taken for slides the next night). ``aliases`` receives one line per image dropped as a symlink
    alias of one listed earlier.
    """
    check_inputs(inputs)
    skip = {os.path.abspath(p) for p in (exclude or [])}
    names = _SlideNames(aliases)
    for inp in inputs:
        root = os.path.abspath(inp)
        if not os.path.isdir(root):
            name, folder = os.path.basename(root), os.path.dirname(root)
            slide = os.path.basename(folder) or name  # a single image's slide is the folder it lies in
            yield from names.rows(slide, folder, iter([_file(slide, name, name, root)]))
            continue
        yield from _discover_folder(root, skip, names)


def _discover_folder(root: str, skip: set[str], names: _SlideNames) -> Iterator[Found]:
    """One INPUT folder: its loose images (a slide named after it), then its slide folders by name."""
    root_slide = os.path.basename(root) or root
    try:
        entries = _sorted_entries(root)
    except OSError as exc:
        yield Found(root_slide, "./", "./", root, error=f"cannot list folder: {exc.strerror or exc}")
        return
    ancestors = frozenset({_ident(root)})
    folders = []
    loose = []
    for entry in entries:  # loose images first: they are the slide named after INPUT
        path = os.path.join(root, entry.name)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            if path not in skip and not is_results_folder(path):
                folders.append(entry)
        elif is_image_name(entry.name):
            loose.append(_file(root_slide, entry.name, entry.name, path))
    yield from names.rows(root_slide, root, iter(loose))
    for entry in folders:
        path = os.path.join(root, entry.name)
        try:
            ident = _ident(path)
        except OSError as exc:
            yield Found(entry.name, entry.name + "/", "./", path, error=f"cannot open folder: {exc.strerror}")
            continue
        if ident in ancestors:
            yield Found(entry.name, entry.name + "/", "./", path, error="symlink loop: leads back into INPUT")
            continue
        rows = _walk_slide(path, entry.name, entry.name + "/", "", ancestors | {ident}, skip)
        yield from names.rows(entry.name, path, rows)

"""The one error path of the CLI: a known exception becomes one line on stderr and a documented exit code.

Why one place: every command used to catch its own list of exceptions and print its own prefix, and the lists had
drifted (``allscan evaluate`` printed its missing-extra message on stdout, ``bench`` knew RunnerError, ``evaluate``
did not). Exit codes, as in the README: 2 usage or configuration (an unknown model, a missing extra, a refused
input; an :class:`EngineBuildError` may carry its own), 3 internal error with a traceback log, 4 storage fault,
130 / 143 interrupted. Known exception classes are looked up in ``sys.modules``: an exception of a class can only
exist once its module was imported, so this module imports none of the heavy ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

EXIT_USAGE = 2
# (module, class): refusals whose message is already one line with the cause (and usually the remedy)
KNOWN = (
    ("allscan.extras", "MissingExtra"),
    ("allscan.models.store", "ModelStoreError"),
    ("allscan.models.card", "CardError"),
    ("allscan.io.records", "RecordError"),
    ("allscan.pipeline.run", "RunError"),
    ("allscan.pipeline.shards", "ShardError"),
    ("allscan.pipeline.merge", "MergeError"),
    ("allscan.runtime.base", "RunnerError"),
    ("allscan.runtime.engine_build", "EngineBuildError"),
)
RESUMABLE = "finished images are journaled, rerun to resume"


def fail(command: str, message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``allscan COMMAND: error: MESSAGE`` on stderr; the caller raises the returned Exit."""
    print(f"allscan {command}: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _known(exc: BaseException, usage: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, usage):
        return True
    for module, name in KNOWN:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def ending(exc: BaseException, out: Path | None, usage: tuple[type[BaseException], ...] = ()) -> tuple[int, str]:
    """(exit code, one line) for ``exc``; re-raises what is not ours to report (typer's exits, unknown errors
    of a command without a results folder)."""
    if isinstance(exc, typer.Exit | typer.Abort | typer.BadParameter | SystemExit):
        raise exc
    if _known(exc, usage):
        return int(getattr(exc, "exit_code", EXIT_USAGE)), f"error: {exc}"
    if out is None:  # no results folder for a traceback log: Python's own traceback says more
        raise exc
    faults = sys.modules.get("allscan.pipeline.faults")
    interrupted = getattr(faults, "Interrupted", None)
    if isinstance(interrupted, type) and isinstance(exc, interrupted):
        return int(getattr(exc, "exit_code", 130)), f"{exc}; {RESUMABLE}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, f"interrupted; {RESUMABLE}"
    if isinstance(exc, Exception):
        from allscan.pipeline.faults import failure_line

        return failure_line(exc, out)
    raise exc


@contextmanager
def reported(
    command: str,
    out: Path | None = None,
    usage: tuple[type[BaseException], ...] = (),
    cleanup: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Run the block; an exception that ends the command becomes ``allscan COMMAND: <one line>`` and its exit code.

    ``usage``: further exception types this command reports as usage errors (exit 2). With ``out`` (a command that
    writes results), interrupts map to 130 / 143 and anything else to 3 (traceback logged under ``out``) or 4.
    ``cleanup`` runs first (a progress bar must stop before the line is printed).
    """
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 - every way a command ends maps to one documented exit code
        if cleanup is not None:
            cleanup()
        code, line = ending(exc, out, usage)
        print(f"allscan {command}: {line}", file=sys.stderr)
        raise typer.Exit(code) from None

"""``allscan run``: the nightly batch command. Only draws progress and the summary; the work is ``run_batch``.

Exit codes (the brief's contract): 0 every image processed; 1 the run finished but some images failed (their
rows in images.csv say why); 2 usage or configuration error; 3 internal error (one line plus a traceback log
under --out); 4 storage fault (disk full, I/O error, read-only); 130 / 143 interrupted by SIGINT / SIGTERM.
Progress is a rich bar on a terminal and plain log lines when stdout is not one (a scheduler's log) or with
``--quiet``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from allscan.cli.errors import reported
from allscan.cli.options import (
    Backend,
    BackendOpt,
    BatchSize,
    Executor,
    Heatmaps,
    HeatmapsOpt,
    Inputs,
    ModelName,
    NoReport,
    ResultsOut,
    Workers,
)
from allscan.cli.reporting import report_or_warn
from allscan.io.images import DEFAULT_MAX_PIXELS
from allscan.models.store import DEFAULT_MODEL

if TYPE_CHECKING:
    from allscan.pipeline.config import Progress as RunProgress
    from allscan.pipeline.summary import RunSummary

PLAIN_EVERY_S = 10.0  # plain progress lines: at most one per this many seconds


class _RateColumn(ProgressColumn):
    """Images per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "- img/s", style="progress.data.speed")


class _Reporter:
    """Progress for one run: a rich bar (TTY) or plain, rate-limited log lines."""

    def __init__(self, console: Console, fancy: bool) -> None:
        self.console = console
        self.fancy = fancy
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.started = time.monotonic()
        self.last_line = 0.0

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message, highlight=False)
        else:
            self.console.print(f"allscan: {message}", highlight=False, soft_wrap=True)

    def __call__(self, event: RunProgress) -> None:
        done, total, errors = event.done, event.total, event.errors
        if self.fancy:
            if self.bar is None:
                self.bar = Progress(
                    TextColumn("[bold]allscan run"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    _RateColumn(),
                    TimeRemainingColumn(),
                    TextColumn("errors: {task.fields[errors]}"),
                    console=self.console,
                    transient=False,
                )
                self.bar.start()
                self.task = self.bar.add_task("images", total=total, errors=0)
            self.bar.update(self.task, completed=done, errors=errors)  # type: ignore[arg-type]
            return
        now = time.monotonic()
        if done == total or now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            elapsed = max(now - self.started, 1e-9)
            rate = done / elapsed
            eta = (total - done) / rate if rate > 0 else 0.0
            self.log(f"{done}/{total} images, {rate:.1f} img/s, {errors} errors, ETA {eta:.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _summary_table(s: RunSummary) -> Table:
    table = Table(title="allscan run", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("images", str(s.n_images))
    table.add_row("processed now / from journal", f"{s.n_processed} / {s.n_reused}")
    table.add_row("errors", str(s.n_error))
    table.add_row("flagged", str(s.n_flagged))
    for name, count in s.per_class.items():
        table.add_row(f"  called {name}", str(count))
    table.add_row("slides", str(s.n_slides))
    table.add_row("time", f"{s.wall_s:.1f} s")
    table.add_row("images/s", f"{s.images_per_s:.1f}")
    table.add_row("backend", s.backend_reason or s.backend)
    table.add_row("results", str(s.out_dir))
    return table


Resume = Annotated[bool, typer.Option("--resume/--no-resume", help="Reuse journaled results of unchanged images.")]
MaxPixels = Annotated[
    int, typer.Option("--max-pixels", min=1, help="Refuse images with more pixels (decompression bombs).")
]
AllowEmpty = Annotated[
    bool,
    typer.Option(
        "--allow-empty",
        help="Publish even when an INPUT that gave results before yields no image now (default: refuse, exit 2).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Plain log lines instead of a progress bar.")]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="Only the slides of shard K of N (a stable hash of the slide name); put shards together with "
        "allscan merge.",
        show_default=False,
    ),
]
ExecutorOpt = Annotated[
    Executor,
    typer.Option(
        "--executor",
        help="local: worker processes and the runner on this machine; ray: decode/segment and inference on a "
        "Ray cluster (pip install 'allscan[ray]'), tables and journal written here.",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="With --executor ray: the cluster to join (default: $RAY_ADDRESS, else a new local cluster).",
        show_default=False,
    ),
]


def run(
    inputs: Inputs,
    *,
    model: ModelName = DEFAULT_MODEL,
    out: ResultsOut = Path("allscan-results"),
    backend: BackendOpt = Backend.auto,
    batch_size: BatchSize = 16,
    heatmaps: HeatmapsOpt = Heatmaps.flagged,
    resume: Resume = True,
    workers: Workers = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    allow_empty: AllowEmpty = False,
    quiet: Quiet = False,
    no_report: NoReport = False,
    shard: ShardOpt = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddress = None,
) -> None:
    """Classify every image under INPUT... into images.csv, cells.csv, slides.csv, heatmaps/, run.json and
    report.html."""
    from allscan.pipeline.faults import stop_on_sigterm

    stop_on_sigterm()  # before the heavy imports: a scheduler's stop request is honoured from here on
    from allscan.pipeline.shards import Shard

    with reported("run"):
        chosen = Shard.parse(shard) if shard is not None else None
        if executor is Executor.ray:
            _require_ray()
    from allscan.pipeline.run import RunConfig, run_batch  # heavy imports only when running

    console = Console()
    reporter = _Reporter(console, fancy=console.is_terminal and not quiet)
    config = RunConfig(
        inputs=list(inputs),
        out=out,
        model=model,
        backend=backend.value,
        batch_size=batch_size,
        heatmaps=heatmaps.value,
        resume=resume,
        workers=workers,
        max_pixels=max_pixels,
        allow_empty=allow_empty,
        report=not no_report,
        shard=chosen,
        executor=executor.value,
        ray_address=ray_address,
        progress=reporter,
        log=reporter.log,
    )
    with reported("run", out, cleanup=reporter.close):
        summary = run_batch(config)
        if not no_report:
            report_or_warn(summary.out_dir, summary)
    _finish(summary, reporter, out)


def _finish(summary: RunSummary, reporter: _Reporter, out: Path) -> None:
    """Stop the bar, print warnings and the summary table, and exit with the run's own code (0 or 1)."""
    reporter.close()
    for warning in summary.warnings:
        reporter.log(f"warning: {warning}")
    reporter.console.print(_summary_table(summary))
    if summary.n_error:
        reporter.log(f"{summary.n_error} images failed: see the 'error' column of {out / 'images.csv'}")
    raise typer.Exit(summary.exit_code)


def _require_ray() -> None:
    """Refuse --executor ray before any work when Ray Data is not installed (no import: Ray loads in seconds)."""
    from allscan.extras import MissingExtra, missing

    for module in ("ray", "pandas", "pyarrow"):  # ray.data needs all three
        problem = missing(module, "ray", "--executor ray (Ray Data)")
        if problem:
            raise MissingExtra(problem)

"""The report at the end of ``allscan run`` and ``allscan merge``: started here, by the CLI, not by the pipeline.

Why here: the report is a view of the published tables, so the pipeline neither needs it nor depends on it (the
layers contract: pipeline and report are siblings). A report that cannot be written is a warning, since the
tables already stand; a full or failing disk still ends the command as a storage fault (exit 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allscan.pipeline.summary import RunSummary


def report_or_warn(out_dir: Path, summary: RunSummary) -> None:
    """Write ``out_dir``/report.html into ``summary.report_path``, or add one warning line to ``summary``."""
    from allscan.pipeline.faults import storage_fault
    from allscan.report import write_report

    try:
        summary.report_path = write_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - the report is a view of the tables, which are already published
        if storage_fault(exc, out_dir) is not None:
            raise  # a full or failing disk ends the run (exit 4), whatever it hit first
        summary.warnings.append(f"report not written: {type(exc).__name__}: {exc}")

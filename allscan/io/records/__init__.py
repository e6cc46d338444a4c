"""The output contract as typed records: the rows of the three tables and run.json (see rows.py and run.py)."""

from allscan.io.records.rows import (
    CellRecord,
    ImageRecord,
    RecordError,
    SlideRecord,
    benign_class,
    columns_of,
    from_cells,
    from_values,
    header_classes,
    read_records,
    to_cells,
    to_values,
)
from allscan.io.records.run import (
    Counts,
    ModelRecord,
    ModelRef,
    Producer,
    RunFlags,
    RunRecord,
    ShardInfo,
    read_run,
    write_run,
)
from allscan.io.tables import Flag

__all__ = [
    "CellRecord",
    "Counts",
    "Flag",
    "ImageRecord",
    "ModelRecord",
    "ModelRef",
    "Producer",
    "RecordError",
    "RunFlags",
    "RunRecord",
    "ShardInfo",
    "SlideRecord",
    "benign_class",
    "columns_of",
    "from_cells",
    "from_values",
    "header_classes",
    "read_records",
    "to_cells",
    "to_values",
    "write_run",
    "read_run",
]

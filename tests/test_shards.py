"""``allscan run --shard K/N`` + ``allscan merge``: merged shards publish one run's tables byte for byte."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from pipeline_synth import field, make_slides, write_jpeg
from typer.testing import CliRunner

from allscan.cli import app
from allscan.pipeline.journal import JOURNAL_NAME, RunLock
from allscan.pipeline.merge import MergeConfig, MergeError, merge_shards
from allscan.pipeline.run import RunConfig, RunSummary, run_batch
from allscan.pipeline.shards import Shard, ShardError, shard_of

TABLES = ("images.csv", "cells.csv", "slides.csv")


def _inputs(root: Path) -> list[Path]:
    """Two INPUTs: slide folders, loose images (a slide named after the INPUT), an unusable file."""
    make_slides(root / "ward1", 10, n_slides=5)
    write_jpeg(root / "ward1" / "loose-a.jpg", field(64, purple=[(20, 20, 8)], seed=91))
    write_jpeg(root / "ward2" / "zeta" / "deep" / "x.jpg", field(64, purple=[(30, 30, 9)], seed=92))
    write_jpeg(root / "ward2" / "alpha" / "y.jpg", field(64, seed=93))
    (root / "ward2" / "alpha" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return [root / "ward1", root / "ward2"]


def _run(inputs: list[Path], out: Path, shard: str | None = None, **options: object) -> RunSummary:
    settings: dict[str, object] = {"model": "tiny", "workers": 0, "heatmaps": "all", "report": False, **options}
    return run_batch(
        RunConfig(inputs=inputs, out=out, shard=Shard.parse(shard) if shard else None, **settings)  # type: ignore[arg-type]
    )


def _shards(inputs: list[Path], root: Path, n: int, **options: object) -> list[Path]:
    outs = [root / f"shard{k}" for k in range(1, n + 1)]
    for k, out in enumerate(outs, start=1):
        _run(inputs, out, f"{k}/{n}", **options)
    return outs


def _bytes(out: Path) -> dict[str, bytes]:
    return {t: (out / t).read_bytes() for t in TABLES}


@pytest.mark.parametrize("n", [1, 3, 12])
def test_merged_shards_are_byte_identical_to_one_run(n: int, tiny_store: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    single = _run(inputs, tmp_path / "single")
    assert single.n_slides == 8 and single.n_error == 1
    outs = _shards(inputs, tmp_path, n)
    sizes = [json.loads((o / "run.json").read_text())["counts"]["images"] for o in outs]
    assert sum(sizes) == single.n_images and (n < 8 or 0 in sizes)  # N > slides: some shards are empty
    merged = merge_shards(MergeConfig(shards=list(reversed(outs)), out=tmp_path / "merged"))
    assert _bytes(tmp_path / "merged") == _bytes(tmp_path / "single")
    assert (merged.n_images, merged.n_slides, merged.exit_code) == (single.n_images, 8, 1)
    heatmaps = sorted(p.relative_to(tmp_path / "single") for p in (tmp_path / "single" / "heatmaps").rglob("*.png"))
    assert heatmaps and heatmaps == sorted(
        p.relative_to(tmp_path / "merged") for p in (tmp_path / "merged" / "heatmaps").rglob("*.png")
    )
    for rel in heatmaps:
        assert (tmp_path / "merged" / rel).read_bytes() == (tmp_path / "single" / rel).read_bytes()
    run = json.loads((tmp_path / "merged" / "run.json").read_text())
    one = json.loads((tmp_path / "single" / "run.json").read_text())
    assert run["counts"] == one["counts"] and run["args"] == {**one["args"], "out": str(tmp_path / "merged")}
    assert run["model"] == one["model"] and run["exit_code"] == 1 and "shard" not in run
    assert [s["shard"] for s in run["shards"]] == [f"{k}/{n}" for k in range(1, n + 1)]
    assert [s["counts"]["images"] for s in run["shards"]] == sizes
    assert not (tmp_path / "merged" / "report.html").exists()  # the CLI starts the report, not merge_shards


def test_shard_run_json_records_the_shard_and_the_full_discovery(tiny_store: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    _run(inputs, tmp_path / "s1", "1/2")
    _run(inputs, tmp_path / "s2", "2/2")
    one, two = (json.loads((tmp_path / s / "run.json").read_text()) for s in ("s1", "s2"))
    assert one["shard"]["discovered"] == two["shard"]["discovered"]
    assert one["shard"]["discovered"]["images"] == 14 and one["shard"]["discovered"]["slides"] == 8
    assert (one["shard"]["k"], one["shard"]["n"], one["args"]["shard"]) == (1, 2, "1/2")
    slides = {s for s in (tmp_path / "s1" / "slides.csv").read_text().splitlines()[1:]}
    assert all(shard_of(line.split(",")[0], 2) == 1 for line in slides)


def test_a_new_slide_does_not_move_the_others(tiny_store: Path, tmp_path: Path) -> None:
    names = [f"patient-{i:02d}" for i in range(40)]
    before = {name: shard_of(name, 5) for name in names}
    assert set(before.values()) == {1, 2, 3, 4, 5}  # the hash spreads slides over every shard
    assert {name: shard_of(name, 5) for name in [*names, "patient-new", "aaa"]} | before == {
        **before,
        "patient-new": shard_of("patient-new", 5),
        "aaa": shard_of("aaa", 5),
    }
    inputs = [tmp_path / "in"]
    make_slides(tmp_path / "in", 9, n_slides=3)
    outs = _shards(inputs, tmp_path, 3)
    new = tmp_path / "in" / "slide-new"
    write_jpeg(new / "a.jpg", field(64, seed=7))
    write_jpeg(new / "b.jpg", field(64, seed=8))
    again = [_run(inputs, out, f"{k}/3") for k, out in enumerate(outs, start=1)]
    assert [s.n_processed for s in again] == [2 if k == shard_of("slide-new", 3) else 0 for k in (1, 2, 3)]
    merge_shards(MergeConfig(shards=outs, out=tmp_path / "merged"))
    _run(inputs, tmp_path / "single")
    assert _bytes(tmp_path / "merged") == _bytes(tmp_path / "single")


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "3", "1/0", "-1/3"])
def test_bad_shard_values_are_usage_errors(text: str, tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardError):
        Shard.parse(text)
    make_slides(tmp_path / "in", 1, n_slides=1)
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "in"), "-m", "tiny", "-o", str(tmp_path / "o"), "--shard", text]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()] and "--shard" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_shard_and_merge(tiny_store: Path, tmp_path: Path) -> None:
    inputs = [str(p) for p in _inputs(tmp_path / "in")]
    runner = CliRunner()
    codes = []
    for k in (1, 2):
        args = ["run", *inputs, "-m", "tiny", "-o", str(tmp_path / f"s{k}"), "--shard", f"{k}/2", "-q", "--no-report"]
        codes.append(runner.invoke(app, args).exit_code)
    assert codes == [1 if k == shard_of("alpha", 2) else 0 for k in (1, 2)]  # the truncated JPEG's shard fails
    single = runner.invoke(app, ["run", *inputs, "-m", "tiny", "-o", str(tmp_path / "one"), "-q", "--no-report"])
    assert single.exit_code == 1
    merged = runner.invoke(app, ["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "-o", str(tmp_path / "m")])
    assert merged.exit_code == 1 and "1 images failed" in merged.output
    assert _bytes(tmp_path / "m") == _bytes(tmp_path / "one") and (tmp_path / "m" / "report.html").is_file()
    missing = runner.invoke(app, ["merge", str(tmp_path / "s1"), "-o", str(tmp_path / "m2")])
    assert missing.exit_code == 2 and missing.output.strip() == (
        "allscan merge: error: shards missing: 2/2 (given: 1/2); run them, or merge all N"
    )
    assert not (tmp_path / "m2" / "images.csv").exists()


def _refused(outs: list[Path], out: Path, match: str) -> None:
    """merge refuses with one line naming what is wrong, and leaves the tables in ``out`` as they were."""
    before = {t: (out / t).read_bytes() if (out / t).exists() else None for t in TABLES}
    with pytest.raises(MergeError, match=match) as caught:
        merge_shards(MergeConfig(shards=outs, out=out))
    assert "\n" not in str(caught.value)
    assert {t: (out / t).read_bytes() if (out / t).exists() else None for t in TABLES} == before


def test_merge_refuses_shards_that_do_not_belong_together(tiny_store: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    s1, s2, s3 = _shards(inputs, tmp_path, 3)
    out = tmp_path / "merged"
    _run(inputs, tmp_path / "masked", "2/3", model="tiny_masked")
    _refused([s1, tmp_path / "masked", s3], out, rf"shard {tmp_path / 'masked'} was made with other model")
    _run(inputs, tmp_path / "none", "3/3", heatmaps="none")
    _refused([s1, s2, tmp_path / "none"], out, rf"shard {tmp_path / 'none'} was made with other --heatmaps")
    _run(inputs, tmp_path / "of4", "3/4")
    _refused([s1, s2, tmp_path / "of4"], out, rf"shard {tmp_path / 'of4'} was made with other N")
    write_jpeg(tmp_path / "in" / "ward1" / "slide-new" / "a.jpg", field(64, seed=9))
    _run(inputs, tmp_path / "later", "2/3")  # the inputs changed between the shards
    _refused(
        [s1, tmp_path / "later", s3],
        out,
        rf"shard {tmp_path / 'later'} was made with other inputs than {s1} \(15 images in 9 slides vs 14 images",
    )
    shutil.copytree(s2, tmp_path / "copy")
    _refused([s1, s2, s3, tmp_path / "copy"], out, rf"shard 2/3 given twice: {s2} and {tmp_path / 'copy'}")
    _refused([s1, s3], out, r"shards missing: 2/3 \(given: 1/3, 3/3\)")
    _run(inputs, tmp_path / "plain")
    _refused([s1, tmp_path / "plain"], out, rf"{tmp_path / 'plain'} is not a shard")
    _refused([s1, s2, tmp_path / "nothing"], out, rf"{tmp_path / 'nothing'}: no run.json")
    _refused([s1, s2, s3], s1, r"is one of the shards")
    _refused([s1, s2, s3], tmp_path / "plain", r"holds an allscan run's journal")


def test_merge_refuses_a_running_or_unfinished_shard(tiny_store: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    outs = _shards(inputs, tmp_path, 3)
    out = tmp_path / "merged"
    with RunLock(outs[1]):  # shard 2 is being rerun right now
        _refused(outs, out, rf"shard {outs[1]} is still running: another allscan run \(pid \d+\)")
    busy = next(o for o in outs if json.loads((o / "run.json").read_text())["counts"]["images"])
    with sqlite3.connect(busy / JOURNAL_NAME) as db:  # a later run was killed before finishing one image
        db.execute("DELETE FROM results WHERE rowid = (SELECT MIN(rowid) FROM results)")
    _refused(outs, out, rf"shard {busy} is unfinished: its journal lists \d+ images, 1 without a result")


def test_merge_refuses_a_slide_found_in_two_shards(tiny_store: Path, tmp_path: Path) -> None:
    """Shards that agree on N, K and inputs but overlap anyway (another hash, a hand-edited run.json)."""
    inputs = _inputs(tmp_path / "in")
    s1, s2 = _shards(inputs, tmp_path, 2)
    _run(inputs, tmp_path / "all", "1/1")
    doc = json.loads((tmp_path / "all" / "run.json").read_text())
    doc["shard"].update(k=2, n=2)
    doc["counts"]["images"] = 14
    (tmp_path / "all" / "run.json").write_text(json.dumps(doc))
    with sqlite3.connect(tmp_path / "all" / JOURNAL_NAME) as db:  # make the counts add up: only the overlap remains
        n1 = json.loads((s1 / "run.json").read_text())["counts"]["images"]
        db.execute("DELETE FROM current WHERE seq IN (SELECT seq FROM current ORDER BY seq LIMIT ?)", (n1,))
    doc["counts"]["images"] = 14 - n1
    (tmp_path / "all" / "run.json").write_text(json.dumps(doc))
    _refused([s1, tmp_path / "all"], tmp_path / "merged", r"is in two shards: .*shard1 and .*all")


FAKE_SBATCH = """#!/bin/sh
echo "$@" >> "$SBATCH_LOG"
n=$(wc -l < "$SBATCH_LOG")
echo "$((4000 + n));cluster"
"""


def _slurm_args(tmp_path: Path, *extra: str) -> list[str]:
    make_slides(tmp_path / "in", 2, n_slides=2)
    return ["slurm", str(tmp_path / "in"), "-o", str(tmp_path / "night"), "--shards", "3", "-m", "tiny", *extra]


def test_slurm_writes_an_array_and_a_dependent_merge(tiny_store: Path, tmp_path: Path) -> None:
    extra = ("--partition", "gpu", "--gpus-per-task", "1", "--time", "2:00:00", "--script", str(tmp_path / "a.sh"))
    result = CliRunner().invoke(app, _slurm_args(tmp_path, *extra))
    assert result.exit_code == 0, result.output
    array, merge = (tmp_path / "a.sh").read_text(), (tmp_path / "a-merge.sbatch").read_text()
    for line in ("--array=1-3", "--requeue", "--signal=B:USR1@120", "--partition=gpu", "--gpus-per-task=1"):
        assert f"#SBATCH {line}\n" in array
    assert "#SBATCH --time=2:00:00\n" in array and "#SBATCH --time=2:00:00\n" in merge
    night = tmp_path / "night"
    assert f" run {tmp_path / 'in'} -m tiny " in array
    assert f'--shard "$SLURM_ARRAY_TASK_ID/3" -o {night}/shards/"$SLURM_ARRAY_TASK_ID"' in array
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in array
    assert f" merge {night}/shards/1 {night}/shards/2 {night}/shards/3 -o {night}\n" in merge
    assert "--gpus-per-task" not in merge and "--array" not in merge
    assert "--dependency=afterok:$array --kill-on-invalid-dep=yes" in result.output
    assert (night / "slurm").is_dir()  # the tasks' logs go there


def test_slurm_task_script_runs_a_shard_and_maps_exit_codes(tiny_store: Path, tmp_path: Path) -> None:
    """The generated task script, run by bash as Slurm would (task 2 of 3): its shard, resumable, exit 0."""
    import os
    import subprocess

    assert CliRunner().invoke(app, _slurm_args(tmp_path)).exit_code == 0
    script = tmp_path / "night" / "slurm" / "allscan.sbatch"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "7"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads((tmp_path / "night" / "shards" / "2" / "run.json").read_text())
    assert (run["shard"]["k"], run["shard"]["n"], run["args"]["model"]) == (2, 3, "tiny")


def test_slurm_submit_calls_sbatch_with_the_array_id(tiny_store: Path, tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path / "calls"))
    result = CliRunner().invoke(app, [*_slurm_args(tmp_path), "--submit"])
    assert result.exit_code == 0, result.output
    slurm = tmp_path / "night" / "slurm"
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"--parsable {slurm / 'allscan.sbatch'}",
        f"--parsable --dependency=afterok:4001 --kill-on-invalid-dep=yes {slurm / 'allscan-merge.sbatch'}",
    ]
    assert "submitted array job 4001 (3 tasks) and merge job 4002 (afterok:4001)" in result.output
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    refused = CliRunner().invoke(app, [*_slurm_args(tmp_path), "--submit"])
    assert refused.exit_code == 2 and "invalid partition specified: gpu" in refused.output


def test_slurm_scripts_start_this_installations_allscan_not_the_first_on_path(
    tiny_store: Path, tmp_path: Path, monkeypatch
) -> None:
    """sbatch jobs get the submitter's PATH, which may lack this installation or hold another allscan first."""
    import shlex
    import sys

    decoy = tmp_path / "bin" / "allscan"
    decoy.parent.mkdir()
    decoy.write_text("#!/bin/sh\nexit 99\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy.parent}:{__import__('os').environ['PATH']}")
    assert CliRunner().invoke(app, _slurm_args(tmp_path)).exit_code == 0
    slurm = tmp_path / "night" / "slurm"
    for script, verb in (("allscan.sbatch", " run "), ("allscan-merge.sbatch", " merge ")):
        line = next(x for x in (slurm / script).read_text().splitlines() if verb in x)
        program = Path(shlex.split(line)[0])
        assert str(decoy) not in line and program.parent == Path(sys.executable).parent, line

"""`sequestra score`: a CSV in, one anomaly score per row out, clear errors for rows it cannot read."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sequestra.cli import app


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["timestamp,value", *rows]) + "\n")
    return path


def _quiet_rows(n: int) -> list[str]:
    rng = np.random.default_rng(2)
    return [f"{1_700_000_000 + 60 * i},{100 + rng.normal(0, 2):.3f}" for i in range(n)]


def test_every_row_gets_a_score_in_unit_interval_and_the_spike_stands_out(tmp_path: Path) -> None:
    rows = [*_quiet_rows(200), "2023-11-15T01:00:00Z,180", "2023-11-15 01:01:00,", "2023-11-15T01:02:00+00:00,101"]
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["score", "--input", str(_write(tmp_path / "in.csv", rows)), "--output", str(out)])
    assert result.exit_code == 0, result.output
    with out.open() as f:
        scored = list(csv.DictReader(f))
    assert len(scored) == len(rows)
    assert list(scored[0]) == ["timestamp", "value", "anomaly_score"]
    scores = [float(r["anomaly_score"]) for r in scored]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[:32] == [0.0] * 32  # warm-up is unknown, written as 0
    assert scores[200] == max(scores) and scores[200] > 0.8
    assert scored[201]["value"] == "" and scores[201] == 0.0  # missing value: unknown, written as 0
    assert scored[200]["timestamp"] == "2023-11-15T01:00:00Z"  # rows are echoed as given


def test_malformed_row_fails_with_its_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    source = _write(tmp_path / "in.csv", [*_quiet_rows(5), "1700001000,12abc", *_quiet_rows(3)])
    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 1
    assert "line 7" in result.output and "12abc" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_bad_header_and_bad_timestamp_are_named(tmp_path: Path) -> None:
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("time,v\n1,2\n")
    result = CliRunner().invoke(app, ["score", "-i", str(bad_header), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "line 1" in result.output and "timestamp and value" in result.output
    bad_time = _write(tmp_path / "t.csv", ["yesterday,3"])
    result = CliRunner().invoke(app, ["score", "-i", str(bad_time), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "line 2" in result.output and "yesterday" in result.output


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["score", "-i", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "nope.csv" in result.output

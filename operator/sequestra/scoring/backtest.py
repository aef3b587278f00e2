"""Backtesting exported history: `timestamp,value` rows in, the online scorer's score per row out.

Pure: the caller opens the files (see `sequestra score`); this parses rows and streams them through one
`SeriesScorer`, exactly as the operator would have seen them, one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from sequestra.scoring.series import PointScore, ScorerConfig, SeriesScorer

MISSING = frozenset({"", "nan", "null", "none", "na"})


class MalformedRow(ValueError):
    """A row that cannot be read; `line` is its 1-based line number in the file (the header is line 1)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_timestamp(text: str) -> float:
    """Epoch seconds, or ISO 8601 (a time without zone is taken as UTC)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text)  # ValueError with the text if it is neither
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_value(text: str) -> float | None:
    """A number; empty, NaN, null, None or NA is missing (None)."""
    if text.strip().lower() in MISSING:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def score_rows(rows: Iterable[Sequence[str]], config: ScorerConfig | None = None
               ) -> Iterator[tuple[str, str, PointScore]]:
    """Yield (timestamp text, value text, score) per data row of a CSV with `timestamp` and `value` columns.

    Raises MalformedRow at the first row that cannot be read, naming its line.
    """
    lines = iter(rows)
    header = next(lines, None)
    if header is None:
        raise MalformedRow(1, "empty file; expected a header with columns timestamp,value")
    names = [h.strip().lower() for h in header]
    if "timestamp" not in names or "value" not in names:
        raise MalformedRow(1, f"header {','.join(header)!r} lacks the columns timestamp and value")
    t_col, v_col = names.index("timestamp"), names.index("value")
    scorer = SeriesScorer(config)
    for line, row in enumerate(lines, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise MalformedRow(line, f"{len(row)} fields, expected {len(header)} like the header")
        try:
            timestamp = parse_timestamp(row[t_col])
        except ValueError:
            raise MalformedRow(line, f"timestamp {row[t_col]!r} is neither epoch seconds nor ISO 8601") from None
        try:
            value = parse_value(row[v_col])
        except ValueError:
            raise MalformedRow(line, f"value {row[v_col]!r} is not a number (leave it empty if missing)") from None
        yield row[t_col], row[v_col], scorer.update(timestamp, value)

"""Quality on the Numenta Anomaly Benchmark (NAB v1.1): our own implementation of NAB's scoring rules.

    python -m bench.nab            # score `sequestra score` on the whole corpus, print the scoreboard
    python -m bench.nab --book     # same detector through the vectorised ScoreBook (faster; same numbers)

The rules, as published with NAB (dataset README in /work/shared/datasets/nab, or $SEQUESTRA_NAB_DIR):
- each row's score is thresholded; one threshold for the whole corpus, chosen per profile to maximise it;
- the first `min(floor(0.15 n), 0.15 * 5000)` rows of a file are probationary and not scored (NAB's code
  caps the probationary period at 750 rows; the dataset README only says "15%");
- in a window only the earliest detection counts: tpWeight x scaled sigmoid of its position (window
  start ~ +0.987, end ~ 0); a window without detection costs fnWeight;
- a detection outside every window costs fpWeight x the scaled sigmoid of its distance past the
  preceding window, in window widths (just after a window costs little, three widths or more the full
  fpWeight); before the first window it costs the full fpWeight;
- normalised score = 100 x (score - null) / (perfect - null); the null detector never fires, the perfect
  one fires on the first scorable row of every window.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sequestra.scoring import ScoreBook, ScorerConfig

FloatArray = npt.NDArray[np.float64]
DEFAULT_ROOT = Path(os.environ.get("SEQUESTRA_NAB_DIR", "/work/shared/datasets/nab"))
PROBATION_FRACTION = 0.15
PROFILE_NAMES = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}
# NAB's published scoreboard (standard, reward low FP, reward low FN), from the dataset README.
SCOREBOARD: list[tuple[str, float, float, float]] = [
    ("perfect", 100.0, 100.0, 100.0),
    ("ARTime", 74.9, 65.1, 80.4),
    ("Numenta HTM", 70.5, 62.6, 75.2),
    ("CAD OSE", 69.9, 67.0, 73.2),
    ("earthgecko Skyline", 58.2, 46.2, 63.9),
    ("KNN CAD", 58.0, 43.4, 64.8),
    ("Relative Entropy", 54.6, 47.6, 58.8),
    ("Random Cut Forest", 51.7, 38.4, 59.7),
    ("Twitter ADVec", 47.1, 33.6, 53.5),
    ("Windowed Gaussian", 39.6, 20.9, 47.4),
    ("Etsy Skyline", 35.7, 27.1, 44.5),
    ("Bayesian changepoint", 17.7, 3.2, 32.2),
    ("null", 0.0, 0.0, 0.0),
]


@dataclass(frozen=True)
class Profile:
    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True)
class NabFile:
    name: str  # path relative to data/
    timestamps: FloatArray  # epoch seconds
    values: FloatArray
    windows: tuple[tuple[int, int], ...]  # inclusive row ranges


def load_profiles(root: Path = DEFAULT_ROOT) -> list[Profile]:
    raw = json.loads((root / "config" / "profiles.json").read_text())
    return [Profile(name, c["tpWeight"], c["fpWeight"], c["fnWeight"])
            for name, c in ((n, p["CostMatrix"]) for n, p in raw.items())]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def load_corpus(root: Path = DEFAULT_ROOT) -> list[NabFile]:
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    corpus = []
    for name in sorted(windows):
        with (root / "data" / name).open() as f:
            rows = list(csv.DictReader(f))
        ts = np.array([_epoch(r["timestamp"]) for r in rows])
        values = np.array([float(r["value"]) for r in rows])
        spans = []
        for start, end in windows[name]:
            first = int(np.searchsorted(ts, _epoch(start), side="left"))
            last = int(np.searchsorted(ts, _epoch(end), side="right")) - 1
            spans.append((first, last))
        corpus.append(NabFile(name, ts, values, tuple(spans)))
    return corpus


def probationary_length(rows: int) -> int:
    return int(min(math.floor(PROBATION_FRACTION * rows), PROBATION_FRACTION * 5000))


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ~+1 deep before a window's end, 0 at the end, -1 from three widths past it."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def row_weights(rows: int, windows: Sequence[tuple[int, int]], profile: Profile
                ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """What a detection on each row would earn (before the per-window max), and its window (-1: none)."""
    weight = np.empty(rows)
    window_of = np.full(rows, -1, dtype=np.int64)
    ordered = sorted(windows)
    prev: tuple[int, int] | None = None
    k = 0
    for i in range(rows):
        if k < len(ordered) and i > ordered[k][1]:
            prev = ordered[k]
            k += 1
        if k < len(ordered) and ordered[k][0] <= i <= ordered[k][1]:
            left, right = ordered[k]
            width = right - left + 1
            weight[i] = profile.tp_weight * scaled_sigmoid(-(right - i + 1) / width)
            window_of[i] = k
        elif prev is None:
            weight[i] = -profile.fp_weight
        else:
            width = prev[1] - prev[0] + 1
            weight[i] = profile.fp_weight * scaled_sigmoid(abs(prev[1] - i) / max(width - 1, 1))
    return weight, window_of


@dataclass(frozen=True)
class CorpusScore:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    detections: int
    windows_hit: int
    windows: int

    @property
    def normalised(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_corpus(corpus: Sequence[NabFile], scores: Sequence[FloatArray], profile: Profile) -> CorpusScore:
    """NAB score of one detector's per-row scores (NaN = no score) at the best corpus-wide threshold."""
    all_scores, all_weights, all_windows = [], [], []
    null = perfect = 0.0
    offset = 0
    for f, s in zip(corpus, scores, strict=True):
        rows = len(f.values)
        if len(s) != rows:
            raise ValueError(f"{f.name}: {len(s)} scores for {rows} rows")
        weight, window_of = row_weights(rows, f.windows, profile)
        start = probationary_length(rows)
        weight, window_of, s = weight[start:], window_of[start:], np.nan_to_num(s[start:], nan=0.0)
        for k in np.unique(window_of[window_of >= 0]):
            null -= profile.fn_weight
            perfect += float(weight[window_of == k].max())
        all_scores.append(s)
        all_weights.append(weight)
        all_windows.append(np.where(window_of >= 0, window_of + offset, -1))
        offset += len(f.windows)
    score = np.concatenate(all_scores)
    weight = np.concatenate(all_weights)
    window = np.concatenate(all_windows)
    order = np.argsort(-score, kind="stable")
    score, weight, window = score[order], weight[order], window[order]

    # Walk the rows from the highest score down; after each distinct score the total is what that
    # threshold (detect every row scoring at least it) earns.
    gain = np.where(window < 0, weight, 0.0)
    best_in_window = np.full(offset, -profile.fn_weight)
    for i in np.flatnonzero(window >= 0):
        k = window[i]
        if weight[i] > best_in_window[k]:
            gain[i] = weight[i] - best_in_window[k]
            best_in_window[k] = weight[i]
    total = null + np.cumsum(gain)
    last_of_tie = np.append(score[1:] != score[:-1], True)
    candidates = np.flatnonzero(last_of_tie)
    best = int(candidates[np.argmax(total[candidates])])
    scored_windows = len(np.unique(window[window >= 0]))
    if total[best] <= null:
        return CorpusScore(profile.name, math.inf, null, null, perfect, 0, 0, scored_windows)
    detected = window[: best + 1]
    hit = len(np.unique(detected[detected >= 0]))
    return CorpusScore(profile.name, float(score[best]), float(total[best]), null, perfect, best + 1, hit,
                       scored_windows)


# --- detectors -----------------------------------------------------------------------------------


def scores_through_cli(corpus: Sequence[NabFile], root: Path = DEFAULT_ROOT) -> list[FloatArray]:
    """Run each data file through the `sequestra score` command (in process) and read its output back."""
    from sequestra.cli import score as score_command

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in corpus:
            target = Path(tmp) / f.name.replace("/", "__")
            score_command(input=root / "data" / f.name, output=target)
            with target.open() as fh:
                out.append(np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)]))
    return out


def scores_through_book(corpus: Sequence[NabFile], config: ScorerConfig | None = None) -> list[FloatArray]:
    """All files at once through one ScoreBook, row i of every file in one call (unknown scores 0)."""
    rows = max(len(f.values) for f in corpus)
    book = ScoreBook(len(corpus), config)
    values = np.full((rows, len(corpus)), np.nan)
    times = np.full((rows, len(corpus)), np.nan)
    for j, f in enumerate(corpus):
        values[: len(f.values), j] = f.values
        times[: len(f.values), j] = f.timestamps
    out = np.zeros((rows, len(corpus)))
    for i in range(rows):
        score, *_ = book.update(times[i], values[i])
        out[i] = np.nan_to_num(score, nan=0.0)
    return [out[: len(f.values), j] for j, f in enumerate(corpus)]


@dataclass(frozen=True)
class NabResult:
    scores: list[CorpusScore]
    points: int
    files: int
    seconds: float
    path: str

    @property
    def met_goals(self) -> bool:
        # Quality is reported beside the scoreboard, not gated: there is no pass mark in NAB.
        return True

    def lines(self) -> list[str]:
        ours = {s.profile: s.normalised for s in self.scores}
        std, low_fp, low_fn = (ours[p] for p in PROFILE_NAMES)
        board = sorted([*SCOREBOARD, ("Sequestra (this run)", std, low_fp, low_fn)], key=lambda r: -r[1])
        rows = [
            f"## NAB v1.1: {self.files} files, {self.points} points, scored through {self.path} "
            f"in {self.seconds:.1f} s",
            "| detector | standard | low FP | low FN |",
            "|---|---|---|---|",
        ]
        rows += [f"| {'**' + n + '**' if n.startswith('Sequestra') else n} | {a:.1f} | {b:.1f} | {c:.1f} |"
                 for n, a, b, c in board]
        rows.append("| profile | threshold | detections | windows hit | raw | null | perfect |")
        rows.append("|---|---|---|---|---|---|---|")
        rows += [f"| {PROFILE_NAMES[s.profile]} | {s.threshold:.4f} | {s.detections} | {s.windows_hit}/{s.windows} "
                 f"| {s.raw:.2f} | {s.null:.2f} | {s.perfect:.2f} |" for s in self.scores]
        return rows


def run(through_cli: bool = True, root: Path = DEFAULT_ROOT,
        detector: Callable[[Sequence[NabFile]], list[FloatArray]] | None = None) -> NabResult:
    corpus = load_corpus(root)
    began = time.monotonic()
    if detector is not None:
        scores, path = detector(corpus), "a custom detector"
    elif through_cli:
        scores, path = scores_through_cli(corpus, root), "`sequestra score`"
    else:
        scores, path = scores_through_book(corpus), "ScoreBook"
    seconds = time.monotonic() - began
    results = [score_corpus(corpus, scores, p) for p in load_profiles(root)]
    return NabResult(results, sum(len(f.values) for f in corpus), len(corpus), seconds, path)


if __name__ == "__main__":
    print("\n".join(run(through_cli="--book" not in sys.argv[1:]).lines()))

"""Online, causal anomaly scoring of one time series, or of many at once with the same code.

Each point is scored against a baseline built from the points before it only, then joins that history.
Three predictors of "normal" compete, each with its own streaming error scale:

- level: the median of the last `window` values (robust to spikes; adapts to a level shift within
  about `window / 2` points, after which the new level is normal);
- trend: that median moved along the median pairwise slope of the window (a steady ramp is normal);
- seasonal: the median plus the offset learnt for this time of day (a daily peak is normal), plus a
  weekly correction per 3 hours of the week once learnt, where that fits the series better so far.

A point's deviation is its residual in units of the predictor's mean absolute error, taken from the
predictor that explains the point best: a point is anomalous only when no model of normal explains it.

How rare that deviation is for this series decides the score: a decayed histogram of the series' own
past |deviation| (with a Laplace prior for young series) gives the tail probability p of a deviation
this large; surprise = -ln p, and score = e / (e + spread) with e = max(surprise - offset, 0). A series
whose residuals are always spiky therefore needs a bigger spike to score high than a quiet one, which
makes one threshold fit many kinds of series; the score never saturates, so large surprises keep their
order. A value well beyond the range the series has shown scores at least `range_break_score` (HTM's
"spatial anomaly"). A new excursion no more surprising than one already reported the same way in the
last `repeat_window` points scores 0 unless it lasts: the first alarm counts, its echoes do not.
Missing values (None/NaN) score None ("unknown") and leave the state untouched; the first
`warmup_points` values score None but are learnt from.

All state lives in one float64 row per series (ring buffer, daily and weekly profiles, a few
scalars), under 2 KiB per series with the defaults, so `ScoreBook` scores many series per numpy call and
`SeriesScorer` is a book of one. Memory per series is fixed: nothing grows with the length of the history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from sequestra.model.sequestration import CamelModel

FloatArray = npt.NDArray[np.float64]
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S


class ScorerConfig(CamelModel):
    """One configuration for every series (no per-series tuning)."""

    window: int = Field(default=64, ge=8, le=4096, description="recent values kept for the level baseline")
    warmup_points: int = Field(default=32, ge=2, description="values seen before a score is given")
    seasonal_bins: int = Field(default=48, ge=2, le=1440, description="time-of-day bins of the daily profile")
    seasonal_memory_days: float = Field(default=3.0, gt=0, description="how many days the daily profile remembers")
    seasonal_after_s: float = Field(default=1.5 * DAY_S, ge=0, description="history before the profile is used")
    weekly_bins: int = Field(default=56, ge=0, le=2016,
                             description="bins of the weekly correction to the daily profile (0: none)")
    weekly_memory_weeks: float = Field(default=3.0, gt=0, description="how many weeks the weekly correction remembers")
    weekly_after_s: float = Field(default=10.5 * DAY_S, ge=0,
                                  description="history before the weekly correction is used")
    scale_alpha: float = Field(default=0.02, gt=0, le=1, description="learning rate of each error scale")
    clip: float = Field(default=4.0, gt=1, description="residuals beyond clip x scale update scales as if at it")
    relative_floor: float = Field(default=1e-3, ge=0, description="smallest scale, relative to the typical |value|")
    surprise_memory: int = Field(default=500, ge=10, description="points the |deviation| histogram remembers")
    surprise_prior: float = Field(default=20.0, gt=0, description="weight of the prior (Laplace) in points")
    surprise_learn_excursions: float = Field(
        default=0.2, ge=0, le=1, description="weight with which excursion points join the |deviation| history")
    score_offset: float = Field(default=2.0, ge=0, description="surprise (nats) below this scores 0")
    score_spread: float = Field(default=3.0, gt=0, description="surprise = offset + spread scores 0.5")
    excursion_score: float = Field(default=0.5, gt=0, lt=1, description="a score at or above starts an excursion")
    repeat_window: int = Field(
        default=200, ge=0, description="points after an excursion during which a no-bigger new one scores 0")
    range_after_points: int = Field(default=300, ge=1, description="values seen before the range is judged")
    range_tolerance: float = Field(
        default=0.05, ge=0, description="a value beyond the range by more than this fraction of it breaks it")
    range_break_score: float = Field(default=0.75, gt=0, lt=1, description="least score of a range break")
    range_memory: int = Field(default=10_000, ge=1, description="points over which the range relaxes to the level")
    repeat_news_after: int = Field(
        default=3, ge=1, description="a repeat that lasts this many points in a row is news all the same")

    @model_validator(mode="after")
    def _warmup_fits(self) -> ScorerConfig:
        if self.warmup_points > self.window:
            raise ValueError(f"warmupPoints ({self.warmup_points}) must not exceed window ({self.window})")
        return self


@dataclass(frozen=True)
class PointScore:
    score: float | None  # in [0, 1]; None = unknown (missing value or warming up)
    baseline: float | None  # what the scorer expected
    value: float | None
    deviation: float | None  # signed residual in units of the baseline's mean absolute error
    anomalous_since: float | None  # epoch seconds when the current excursion began


# Scalar columns after the ring buffer and the seasonal profile.
(_COUNT, _POS, _LAST_TS, _FIRST_TS, _MAG, _E_LEVEL, _E_TREND, _E_SEASON, _SINCE,
 _PEAK_UP, _PEAK_DOWN, _PEAK_AGE, _HELD, _RUN, _RUN_MAX, _LOW, _HIGH, _SEASON_LOW, _SEASON_HIGH,
 _E_WEEK, _WEEK_LOW, _WEEK_HIGH) = range(22)
_SCALARS = 22
# Bin edges of the |deviation| histogram: fine near the body, geometric in the tail, open-ended.
_EDGES = np.concatenate([np.arange(0.0, 3.0, 0.5), np.geomspace(3.0, 1e4, 37), [np.inf]])
_NBINS = len(_EDGES) - 1


class ScoreBook:
    """Scores `size` series at once: `update(timestamps, values)` takes one point per series.

    Vectorised over series with numpy; the per-series arithmetic is exactly `SeriesScorer`'s.
    """

    def __init__(self, size: int, config: ScorerConfig | None = None) -> None:
        self.config = config or ScorerConfig()
        self.size = size
        w, b, wb = self.config.window, self.config.seasonal_bins, self.config.weekly_bins
        self._w, self._b, self._wb = w, b, wb
        self._half = w // 2
        self.state = np.full((size, w + b + wb + _NBINS + _SCALARS), np.nan)
        self._ring = self.state[:, :w]
        self._season = self.state[:, w:w + b]
        self._week = self.state[:, w + b:w + b + wb]
        self._hist = self.state[:, w + b + wb:w + b + wb + _NBINS]
        self._hist[:] = 0.0
        self._s = w + b + wb + _NBINS
        self.state[:, self._s + _COUNT] = 0.0
        self.state[:, self._s + _POS] = 0.0
        self.state[:, self._s + _LAST_TS] = -np.inf
        self.state[:, self._s + _MAG] = 0.0
        self.state[:, self._s + _PEAK_UP] = 0.0
        self.state[:, self._s + _PEAK_DOWN] = 0.0
        self.state[:, self._s + _PEAK_AGE] = 0.0
        self.state[:, self._s + _HELD] = 0.0
        self.state[:, self._s + _RUN] = 0.0
        self.state[:, self._s + _RUN_MAX] = 0.0
        self._rows = np.arange(size)
        # For the trend's pairwise slopes: column j pairs with j + half, which is `half` values apart.
        self._pair_cols = np.arange(self._half)

    @property
    def nbytes(self) -> int:
        return int(self.state.nbytes)

    def _col(self, index: int) -> FloatArray:
        return self.state[:, self._s + index]

    def update(self, timestamps: float | FloatArray, values: FloatArray
               ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Score one point per series; returns (score, baseline, deviation, since), NaN where unknown.

        Points are scored in the order given (real exports repeat or step back an hour at daylight-saving
        changes); the timestamp only places a point in the day. A value without a finite timestamp is missing.
        """
        cfg = self.config
        x = np.asarray(values, dtype=np.float64)
        t = np.broadcast_to(np.asarray(timestamps, dtype=np.float64), x.shape)
        if x.shape != (self.size,):
            raise ValueError(f"expected {self.size} values, got shape {x.shape}")
        present = np.isfinite(x) & np.isfinite(t)

        count = self._col(_COUNT)
        n = np.minimum(count, self._w).astype(np.int64)
        ordered = np.sort(self._ring, axis=1)  # NaN (unfilled slots) sort last
        lo = ordered[self._rows, np.maximum(n - 1, 0) // 2]
        hi = ordered[self._rows, n // 2]
        level = 0.5 * (lo + hi)  # NaN while the ring is empty

        full = count >= self._w
        trend = np.full(self.size, np.nan)
        if full.any():
            pos = self._col(_POS).astype(np.int64)
            a = self._ring[:, :self._half]
            b = self._ring[:, self._half:2 * self._half]
            j = self._pair_cols[None, :]
            # Slot j was written after slot j + half iff the write position wrapped between them.
            a_newer = (j < pos[:, None]) & (pos[:, None] <= j + self._half)
            slopes = np.where(a_newer, a - b, b - a) / self._half
            slope = np.median(slopes, axis=1)
            trend = np.where(full, level + slope * (self._w + 1) / 2.0, np.nan)

        bins = ((np.nan_to_num(t) % DAY_S) // (DAY_S / self._b)).astype(np.int64) % self._b
        offset = self._season[self._rows, bins]
        first_ts = self._col(_FIRST_TS)
        seasoned = np.isfinite(offset) & (t - first_ts >= cfg.seasonal_after_s)
        seasonal = np.where(seasoned, level + offset, np.nan)
        # The weekly correction (what this time of the week adds to the daily profile) replaces the daily
        # profile as the seasonal predictor where it has been learnt and fits the series better so far: a
        # quiet Sunday morning is normal on Sundays, not on Mondays.
        if self._wb:
            wbins = ((np.nan_to_num(t) % WEEK_S) // (WEEK_S / self._wb)).astype(np.int64) % self._wb
            correction = self._week[self._rows, wbins]
        else:
            wbins = np.zeros(self.size, dtype=np.int64)
            correction = np.full(self.size, np.nan)
        weekly_ok = seasoned & np.isfinite(correction) & (t - first_ts >= cfg.weekly_after_s)
        weekly = np.where(weekly_ok, seasonal + correction, np.nan)
        e_daily, e_weekly = self._col(_E_SEASON), self._col(_E_WEEK)
        use_week = weekly_ok & (e_weekly < e_daily)

        floor = np.maximum(cfg.relative_floor * self._col(_MAG), 1e-12)
        preds = np.stack([level, trend, np.where(use_week, weekly, seasonal)])
        scales = np.stack([self._col(_E_LEVEL), self._col(_E_TREND), np.where(use_week, e_weekly, e_daily)])
        residuals = x[None, :] - preds
        with np.errstate(invalid="ignore"):
            z = residuals / np.maximum(np.nan_to_num(scales, nan=0.0), floor)
        usable = np.isfinite(z) & np.isfinite(scales)
        abs_z = np.where(usable, np.abs(z), np.inf)
        best = np.argmin(abs_z, axis=0)
        deviation = z[best, self._rows]
        baseline = preds[best, self._rows]

        known = present & (count >= cfg.warmup_points) & usable.any(axis=0)
        surprise = self._surprise(np.abs(deviation), known)
        # A value well outside the range the series has shown is news whatever the predictors say: in a
        # noisy or spiky series a move of a few errors is ordinary inside the range, not beyond it.
        # (HTM's detector on NAB does the same; the range stretches with every value, so a steady trend
        # never breaks it.) Likewise for the value less its time-of-day profile, once the profile is
        # used: a daily peak that is missing or a night that is too busy, although the level explains it.
        ready = known & (count >= cfg.range_after_points)
        beyond, above = self._range_break(x, self._col(_LOW), self._col(_HIGH), ready)
        deseasoned = np.where(seasoned, x - seasonal, np.nan)
        beyond_d, above_d = self._range_break(deseasoned, self._col(_SEASON_LOW), self._col(_SEASON_HIGH),
                                              ready & (t - first_ts >= 2.0 * cfg.seasonal_after_s))
        beyond_w, above_w = self._range_break(np.where(weekly_ok, x - weekly, np.nan), self._col(_WEEK_LOW),
                                              self._col(_WEEK_HIGH), ready & (t - first_ts >= 2.0 * cfg.weekly_after_s))
        beyond_s = np.where(use_week, beyond_w, beyond_d)
        above_s = np.where(use_week, above_w, above_d)
        breaks = beyond > cfg.range_tolerance
        # ... and only when the predictors find the point unusual too: a trend or a fresh level that the
        # profile has not caught up with moves the de-seasoned value, not the best prediction.
        breaks_s = (beyond_s > cfg.range_tolerance) & (surprise > cfg.score_offset)
        outside = np.maximum(np.where(breaks, beyond, 0.0), np.where(breaks_s, beyond_s, 0.0))
        at_break = cfg.score_offset + cfg.score_spread * cfg.range_break_score / (1.0 - cfg.range_break_score)
        # Capped so that an infinite deviation (a value near the float limit) still scores 1, never NaN.
        surprise = np.minimum(np.where(breaks | breaks_s, np.maximum(surprise, at_break + outside), surprise), 1e12)
        up = np.where(breaks, above, np.where(breaks_s, above_s, deviation > 0))
        excess = np.maximum(surprise - cfg.score_offset, 0.0)
        with np.errstate(invalid="ignore"):
            raw = excess / (excess + cfg.score_spread)
        score = np.where(known, self._repeats_damped(raw, surprise, up, known, breaks | breaks_s), np.nan)
        deviation = np.where(known, deviation, np.nan)
        baseline = np.where(np.isfinite(level), baseline, np.nan)

        since = self._col(_SINCE)
        rising = known & (score >= cfg.excursion_score)
        since[:] = np.where(rising, np.where(np.isnan(since), t, since), np.where(known, np.nan, since))

        self._learn(x, t, present, count, level, np.stack([residuals[0], residuals[1], x - seasonal, x - weekly]),
                    floor, bins, offset, wbins, correction, seasoned)
        return score, baseline, deviation, since.copy()

    @staticmethod
    def _range_break(values: FloatArray, low: FloatArray, high: FloatArray, ready: npt.NDArray[np.bool_]
                     ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """How far beyond [low, high] each value lies, in widths of that range (0 inside or not ready)."""
        with np.errstate(over="ignore", invalid="ignore"):
            span = high - low
            judged = ready & np.isfinite(values) & np.isfinite(span) & (span > 0)
            beyond = np.where(judged, np.maximum(values - high, low - values) / np.where(judged, span, 1.0), 0.0)
        return beyond, values > high

    def _repeats_damped(self, raw: FloatArray, surprise: FloatArray, up: npt.NDArray[np.bool_],
                        known: npt.NDArray[np.bool_], beyond_range: npt.NDArray[np.bool_]) -> FloatArray:
        """Scores 0 for a new excursion no more surprising than one reported in the last `repeat_window` points.

        A run is a stretch of consecutive points that deviate the same way more than ordinary points do
        (score > 0). A run is news when its first point is more surprising than any reported the same way
        in the last `repeat_window` points, and then it keeps its scores for as long as it lasts (a step
        or a flood stays flagged while it is unexplained). A run that is not news scores 0: a fresh spike
        the same way shortly after a bigger one says nothing new, so spiky-but-normal series stop crying
        wolf and the first alarm of an incident stands out. A repeat that lasts `repeat_news_after`
        points is news all the same and scores the highest score of its run so far (a producer flooding
        again soon after a release). Up and down are remembered apart: a drop right after a surge is news.
        A value beyond the range the series has shown is always news: it is bigger than any earlier
        excursion, although its deviation may be smaller in units of an error scale that has grown since.
        """
        cfg = self.config
        peak_up, peak_down = self._col(_PEAK_UP), self._col(_PEAK_DOWN)
        age, seen, run, run_max = self._col(_PEAK_AGE), self._col(_HELD), self._col(_RUN), self._col(_RUN_MAX)
        expired = known & (age >= cfg.repeat_window)
        peak_up[:] = np.where(expired, 0.0, peak_up)
        peak_down[:] = np.where(expired, 0.0, peak_down)
        peak = np.where(up, peak_up, peak_down)

        sign = np.where(up, 1.0, -1.0)
        going = known & (raw > 0.0)
        goes_on = going & (run * sign > 0)  # continues the run in progress
        run[:] = np.where(known, np.where(going, np.where(goes_on, run + sign, sign), 0.0), run)
        run_max[:] = np.where(known, np.where(goes_on, np.maximum(run_max, raw), raw), run_max)
        news = going & ((surprise > peak) | beyond_range | (goes_on & (seen > 0)))
        lasting = going & ~news & (np.abs(run) >= cfg.repeat_news_after) & (raw >= 0.5 * run_max)
        out = np.where(news, raw, np.where(lasting, run_max, 0.0))
        seen[:] = np.where(known, (news | lasting).astype(np.float64), seen)

        new_peak = news & (surprise > peak) & (raw >= cfg.excursion_score)
        peak_up[:] = np.where(new_peak & up, surprise, peak_up)
        peak_down[:] = np.where(new_peak & ~up, surprise, peak_down)
        age[:] = np.where(new_peak, 0.0, np.where(known, age + 1.0, age))
        return out

    def _surprise(self, size: FloatArray, known: npt.NDArray[np.bool_]) -> FloatArray:
        """-ln P(|deviation| >= size) under this series' own recent history of |deviation|.

        A Laplace prior (P = exp(-size), as for residuals in units of their mean absolute value) worth
        `surprise_prior` points keeps a young history from calling everything rare, and ranks points
        beyond all history by their size. Then the history is updated with this point.
        """
        cfg = self.config
        size = np.where(known, size, 0.0)
        k = np.clip(np.searchsorted(_EDGES, size, side="right") - 1, 0, _NBINS - 1)
        at_or_above = np.cumsum(self._hist[:, ::-1], axis=1)[:, ::-1]
        lower, upper = _EDGES[k], _EDGES[k + 1]
        with np.errstate(invalid="ignore"):
            inside = np.where(np.isfinite(upper), (upper - size) / (upper - lower), 0.0)
        own = self._hist[self._rows, k]
        beyond = np.where(k + 1 < _NBINS, at_or_above[self._rows, np.minimum(k + 1, _NBINS - 1)], 0.0)
        total = at_or_above[:, 0]
        # In logs, so that deviations far beyond all history keep their order instead of underflowing.
        seen = beyond + inside * own
        with np.errstate(divide="ignore"):
            log_tail = np.logaddexp(math.log(cfg.surprise_prior) - size, np.log(seen))
        surprise = np.log(cfg.surprise_prior + total) - log_tail
        decay = 1.0 - 1.0 / cfg.surprise_memory
        excess = np.maximum(surprise - cfg.score_offset, 0.0)
        # An excursion's own points would soon make it look ordinary; they join the history at a lower
        # weight, so a sustained excursion keeps scoring until the baseline has moved to it.
        in_excursion = excess / (excess + cfg.score_spread) >= cfg.excursion_score
        weight = np.where(in_excursion, cfg.surprise_learn_excursions, 1.0)
        self._hist[known] *= decay
        self._hist[self._rows[known], k[known]] += weight[known]
        return surprise

    def _learn(self, x: FloatArray, t: FloatArray, present: npt.NDArray[np.bool_], count: FloatArray,
               level: FloatArray, residuals: FloatArray, floor: FloatArray, bins: npt.NDArray[np.int64],
               offset: FloatArray, wbins: npt.NDArray[np.int64], correction: FloatArray,
               seasoned: npt.NDArray[np.bool_]) -> None:
        cfg = self.config
        # Early on each scale is the plain mean of |residual|; later an exponential average whose inputs
        # are clipped, so one outlier cannot blow the scale up and hide the next one.
        for k, col in enumerate((_E_LEVEL, _E_TREND, _E_SEASON, _E_WEEK)):
            r = np.abs(residuals[k])
            have = present & np.isfinite(r)
            if not have.any():
                continue
            scale = self._col(col)
            if col != _E_LEVEL:
                # A predictor that starts late (the trend once the window is full, the profiles after days)
                # takes its first residual as its scale, but not one that is an outlier by the level's
                # scale: that belongs to an excursion in progress, and a scale that large would let the
                # predictor explain the excursion away for hundreds of points. It waits for a plain one.
                outlier = r > cfg.clip * np.maximum(np.nan_to_num(self._col(_E_LEVEL), nan=np.inf), floor)
                have &= ~(np.isnan(scale) & outlier)
            seen = np.where(np.isnan(scale), 0.0, scale)
            capped = np.minimum(r, cfg.clip * np.maximum(seen, floor))
            # Scales count their own updates through the ring count: the level's starts with the 2nd value.
            alpha = np.maximum(1.0 / np.maximum(count, 1.0), cfg.scale_alpha)
            updated = np.where(np.isnan(scale), r, seen + alpha * (capped - seen))
            scale[:] = np.where(have, updated, scale)

        # Seasonal offsets learn (value - level) per time-of-day bin; the learning rate per point is set
        # so that each bin remembers about `seasonal_memory_days` days whatever the sampling interval.
        last = self._col(_LAST_TS)
        step = np.where(np.isfinite(last), np.maximum(t - last, 0.0), 0.0)
        bin_s = DAY_S / self._b
        alpha_s = np.clip(step / (bin_s * cfg.seasonal_memory_days), 0.01, 0.5)
        target = x - level
        e_season = self._col(_E_SEASON)
        known_scale = np.where(np.isnan(e_season), self._col(_E_LEVEL), e_season)
        limit = cfg.clip * np.maximum(np.nan_to_num(known_scale, nan=np.inf), floor)
        target = np.clip(target, np.where(np.isnan(offset), -np.inf, offset - limit),
                         np.where(np.isnan(offset), np.inf, offset + limit))
        new_offset = np.where(np.isnan(offset), target, offset + alpha_s * (target - offset))
        learn_season = present & np.isfinite(level)
        rows = self._rows[learn_season]
        self._season[rows, bins[learn_season]] = new_offset[learn_season]

        # The weekly correction learns what is left after the daily profile, once that is in use, each bin
        # remembering about `weekly_memory_weeks` weeks.
        if self._wb:
            week_bin_s = WEEK_S / self._wb
            alpha_w = np.clip(step / (week_bin_s * cfg.weekly_memory_weeks), 1e-4, 0.5)
            e_week = self._col(_E_WEEK)
            limit_w = cfg.clip * np.maximum(np.nan_to_num(np.where(np.isnan(e_week), e_season, e_week), nan=np.inf),
                                            floor)
            known_c = np.isfinite(correction)
            target_w = np.clip(x - level - offset, np.where(known_c, correction - limit_w, -np.inf),
                               np.where(known_c, correction + limit_w, np.inf))
            new_c = np.where(known_c, correction + alpha_w * (target_w - correction), target_w)
            learn_week = present & seasoned & np.isfinite(level)
            self._week[self._rows[learn_week], wbins[learn_week]] = new_c[learn_week]

        # The range stretches to every value and relaxes toward the level over `range_memory` points, so
        # it forgets a one-off extreme slowly and does not grow with the length of the history.
        relax = 1.0 / cfg.range_memory
        _stretch(self._col(_LOW), self._col(_HIGH), x, np.where(np.isfinite(level), level, x), present, relax)
        seasoned = np.isfinite(offset) & (t - self._col(_FIRST_TS) >= cfg.seasonal_after_s) & np.isfinite(level)
        _stretch(self._col(_SEASON_LOW), self._col(_SEASON_HIGH), x - level - offset, np.zeros_like(x),
                 present & seasoned, relax)
        weekly_ok = seasoned & np.isfinite(correction) & (t - self._col(_FIRST_TS) >= cfg.weekly_after_s)
        _stretch(self._col(_WEEK_LOW), self._col(_WEEK_HIGH), x - level - offset - correction, np.zeros_like(x),
                 present & weekly_ok, relax)

        rows = self._rows[present]
        pos = self._col(_POS)
        self._ring[rows, pos[present].astype(np.int64)] = x[present]
        pos[:] = np.where(present, (pos + 1) % self._w, pos)
        count[:] = np.where(present, count + 1, count)
        mag = self._col(_MAG)
        rate = np.maximum(1.0 / np.maximum(count, 1.0), 0.01)
        mag[:] = np.where(present, mag + rate * (np.abs(np.nan_to_num(x)) - mag), mag)
        first = self._col(_FIRST_TS)
        first[:] = np.where(present & np.isnan(first), t, first)
        last[:] = np.where(present, t, last)


class SeriesScorer:
    """Scores one time series online: `update` each new point, `warm` with history at start-up."""

    def __init__(self, config: ScorerConfig | None = None) -> None:
        self._book = ScoreBook(1, config)
        self._value = np.empty(1)

    @property
    def config(self) -> ScorerConfig:
        return self._book.config

    def update(self, timestamp: float, value: float | None) -> PointScore:
        self._value[0] = math.nan if value is None else value
        score, baseline, deviation, since = self._book.update(float(timestamp), self._value)
        present = value is not None and math.isfinite(value)
        return PointScore(
            score=_opt(score[0]),
            baseline=_opt(baseline[0]),
            value=float(value) if present and value is not None else None,
            deviation=_opt(deviation[0]),
            anomalous_since=_opt(since[0]),
        )

    def warm(self, points: Iterable[tuple[float, float | None]]) -> None:
        """Feed history (oldest first) without keeping the scores, e.g. from a Prometheus range query."""
        for timestamp, value in points:
            self.update(timestamp, value)


def _stretch(low: FloatArray, high: FloatArray, x: FloatArray, centre: FloatArray, where: npt.NDArray[np.bool_],
             relax: float) -> None:
    """Stretch [low, high] to take x; otherwise each end relaxes toward centre by `relax` of the gap."""
    with np.errstate(over="ignore", invalid="ignore"):
        low[:] = np.where(where, np.fmin(np.where(np.isnan(low), x, low + relax * (centre - low)), x), low)
        high[:] = np.where(where, np.fmax(np.where(np.isnan(high), x, high - relax * (high - centre)), x), high)


def _opt(x: np.float64 | float) -> float | None:
    return float(x) if math.isfinite(x) else None

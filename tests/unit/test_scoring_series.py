"""The per-series scorer on constructed series: what it calls anomalous, what it calls normal, what it cannot know."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequestra.scoring import CombinerConfig, PointScore, ScoreBook, ScorerConfig, SeriesScorer, WorkloadScorer

STEP_S = 300.0  # five-minute samples
# Single points of plain noise reach ~0.5 now and then (the combiner asks for 3 in a row); a level no
# single point of noise should reach, and well under what a real spike scores:
ALERT = 0.65


def _feed(scorer: SeriesScorer, values: list[float | None], start: float = 0.0) -> list[PointScore]:
    return [scorer.update(start + i * STEP_S, v) for i, v in enumerate(values)]


def _noise(n: int, level: float = 100.0, sd: float = 5.0, seed: int = 7) -> list[float | None]:
    return list(level + np.random.default_rng(seed).normal(0.0, sd, n))


def _scores(points: list[PointScore]) -> list[float]:
    return [p.score if p.score is not None else 0.0 for p in points]


def _longest_run(scores: list[float], level: float) -> int:
    longest = run = 0
    for s in scores:
        run = run + 1 if s >= level else 0
        longest = max(longest, run)
    return longest


def test_scores_are_unknown_until_warm_then_known() -> None:
    config = ScorerConfig()
    points = _feed(SeriesScorer(config), _noise(100))
    assert all(p.score is None for p in points[: config.warmup_points])
    assert all(p.score is not None for p in points[config.warmup_points:])


def test_spike_scores_high_and_only_the_spike() -> None:
    values = _noise(400)
    values[300] = 100.0 + 20 * 5.0
    points = _feed(SeriesScorer(), values)
    spike = points[300]
    assert spike.score is not None and spike.score > 0.8
    assert spike.deviation is not None and spike.deviation > 0
    assert spike.anomalous_since == 300 * STEP_S
    others = _scores(points[200:300]) + _scores(points[301:])
    assert max(others) < ALERT


def test_step_is_anomalous_at_onset_then_becomes_the_new_normal() -> None:
    values = _noise(300) + _noise(300, level=160.0, seed=8)
    points = _feed(SeriesScorer(), values)
    onset = points[300]
    assert onset.score is not None and onset.score > 0.8
    assert onset.baseline is not None and abs(onset.baseline - 100.0) < 5.0
    # The excursion lasts a few intervals and keeps its start time, then the new level is normal.
    assert all(p.anomalous_since == 300 * STEP_S for p in points[300:303])
    assert max(_scores(points[400:])) < ALERT


def test_a_repeat_spike_soon_after_a_bigger_one_is_not_news_but_a_bigger_one_is() -> None:
    config = ScorerConfig()
    values = _noise(1200)
    first, repeat, bigger = 300, 340, 380
    later = first + config.repeat_window + 100
    values[first] = values[repeat] = 100.0 + 20 * 5.0
    values[bigger] = 100.0 + 60 * 5.0
    values[later] = 100.0 + 20 * 5.0
    points = _feed(SeriesScorer(config), values)
    assert points[first].score is not None and points[first].score > 0.8
    assert points[repeat].score == 0.0
    assert points[repeat].deviation is not None and points[repeat].deviation > 10  # still reported as a deviation
    assert points[bigger].score is not None and points[bigger].score > 0.8
    # Past the repeat window the same spike is news again (rated lower: the series has now seen three).
    assert points[later].score is not None and points[later].score >= CombinerConfig().threshold


def test_a_flood_again_soon_after_the_last_one_is_news_once_it_lasts() -> None:
    config = ScorerConfig()
    quiet = [float(v) for v in 1000.0 + np.random.default_rng(2).normal(0, 50, 400)]
    values: list[float | None] = [*quiet[:300], *[50_000.0] * 10, *quiet[300:340], *[50_000.0] * 10]
    points = _feed(SeriesScorer(config), values)
    assert points[300].score is not None and points[300].score > 0.8
    again = _scores(points[350:360])
    first_flag = next(i for i, s in enumerate(again) if s >= CombinerConfig().threshold)
    assert first_flag < config.repeat_news_after + 1
    assert all(p.deviation is not None and p.deviation > 100 for p in points[350:350 + first_flag + 1])


def test_a_value_beyond_everything_a_spiky_series_has_shown_is_news() -> None:
    # Spikes of +40..+100 are this series' normal; a point above all of them is not, although its
    # deviation is no bigger than the spikes that taught the scorer to shrug them off.
    config = ScorerConfig()
    rng = np.random.default_rng(4)
    values = 100 + rng.normal(0, 5, 1000)
    spikes = rng.choice(np.arange(50, 1000), 60, replace=False)
    values[spikes] += rng.uniform(40, 100, 60)
    points = _feed(SeriesScorer(config), [*map(float, values), 240.0])
    assert points[-1].score is not None and points[-1].score >= config.range_break_score
    # Once the range holds the spikes' sizes (a few hundred points), the spikes themselves rarely score.
    spiky = _scores(points[400:-1])
    assert sum(s >= CombinerConfig().threshold for s in spiky) < 0.01 * len(spiky)


def test_a_value_beyond_the_range_is_news_even_soon_after_a_more_surprising_spike() -> None:
    # The second spike is smaller in units of the (now noisier) series' error, but higher than anything
    # the series has shown: that is news, not an echo of the first.
    values = _noise(350)
    values[330] = 300.0
    values[331:380] = _noise(49, sd=20.0, seed=9)
    values += [340.0]
    points = _feed(SeriesScorer(), values)
    first, second = points[330], points[-1]
    assert first.deviation is not None and second.deviation is not None and second.deviation < first.deviation
    assert second.score is not None and second.score >= ScorerConfig().range_break_score


def test_a_drop_right_after_a_surge_is_news() -> None:
    values = _noise(400)
    values[300:303] = [200.0] * 3
    values[310:313] = [0.0] * 3
    points = _feed(SeriesScorer(), values)
    assert min(_scores(points[300:303])) >= CombinerConfig().threshold
    assert min(_scores(points[310:313])) >= CombinerConfig().threshold
    assert points[310].deviation is not None and points[310].deviation < 0


@pytest.mark.parametrize(("onset", "starts_at"), [
    (60, "the trend, which starts at the 65th value, once the window is full"),
    (64, "the trend, whose first prediction is the step's first value"),
    (428, "the daily profile, which starts 1.5 days in, at the 433rd value"),
])
def test_a_predictor_that_starts_during_a_step_does_not_explain_the_step_away(onset: int, starts_at: str) -> None:
    # A late predictor's error scale used to start from its first residual, whatever it was. When that
    # residual belonged to a step in progress, the scale was as large as the step: the predictor
    # "explained" it, and the step looked normal for hundreds of points. Now the step fades as a step at
    # any other time does.
    values = _noise(onset) + _noise(10, level=160.0, seed=8)
    points = _feed(SeriesScorer(), values)
    step = [p.deviation or 0.0 for p in points[onset:onset + 10]]
    assert points[onset].score is not None and points[onset].score > 0.8
    assert min(step) > 0.5 * step[0], f"{starts_at}: the step was explained away: {[round(d, 1) for d in step]}"


def test_step_down_reports_direction_down() -> None:
    values = _noise(300) + [0.0] * 5
    points = _feed(SeriesScorer(), values)
    assert points[300].deviation is not None and points[300].deviation < 0


def test_steady_trend_is_normal() -> None:
    rng = np.random.default_rng(3)
    values: list[float | None] = list(100.0 + 2.0 * np.arange(600) + rng.normal(0, 5, 600))
    points = _feed(SeriesScorer(), values)
    assert max(_scores(points[100:])) < ALERT


def test_drift_away_from_a_flat_baseline_is_noticed() -> None:
    # A quiet series that suddenly starts climbing fast: the first points of the climb are unexplained.
    values = _noise(300) + [100.0 + 15.0 * (i + 1) for i in range(20)]
    points = _feed(SeriesScorer(), values)
    assert max(_scores(points[300:310])) > ALERT


def _daily(days: int, peak_hour: int = 12, seed: int = 5) -> list[float | None]:
    """5-minute samples, quiet at 100 except a daily two-hour peak at 400 starting at `peak_hour`."""
    rng = np.random.default_rng(seed)
    per_day = int(86_400 / STEP_S)
    values: list[float | None] = []
    for i in range(days * per_day):
        hour = (i % per_day) * STEP_S / 3600
        base = 400.0 if peak_hour <= hour < peak_hour + 2 else 100.0
        values.append(base + rng.normal(0, 5))
    return values


def test_daily_peak_is_normal_once_the_day_is_learnt() -> None:
    values = _daily(8)
    points = _feed(SeriesScorer(), values)
    per_day = int(86_400 / STEP_S)
    later = points[3 * per_day:]
    assert max(_scores(later)) < ALERT


def test_peak_at_an_unusual_hour_is_anomalous() -> None:
    per_day = int(86_400 / STEP_S)
    values = _daily(8)
    night = 7 * per_day + 3 * 12  # 03:00 on day 8: never seen a peak at this hour
    for i in range(night, night + 24):
        values[i] = 400.0 + float(np.random.default_rng(i).normal(0, 5))
    points = _feed(SeriesScorer(), values)
    # Enough, and long enough, for the workload combiner to call it (threshold held 3 intervals).
    assert min(_scores(points[night:night + 3])) >= CombinerConfig().threshold
    assert _longest_run(_scores(points[3 * per_day:night]), CombinerConfig().threshold) < 3


def test_a_daily_peak_at_half_its_usual_height_is_news() -> None:
    # The level predictor explains 250 (between the quiet 100 and the usual peak's 400), but the value
    # less its time-of-day profile is below anything the series has shown.
    config = ScorerConfig()
    per_day = int(86_400 / STEP_S)
    values = _daily(8)
    peak = 7 * per_day + 12 * 12  # the peak's usual hour on day 8
    for i in range(peak, peak + 24):
        values[i] = 250.0 + float(np.random.default_rng(i).normal(0, 5))
    points = _feed(SeriesScorer(config), values)
    assert max(_scores(points[peak:peak + 24])) >= config.range_break_score
    assert max(_scores(points[3 * per_day:peak])) < config.range_break_score


def test_missing_values_are_unknown_and_change_nothing() -> None:
    values = _noise(200)
    with_gaps = [*values[:150], None, math.nan, None, *values[150:]]
    plain = _feed(SeriesScorer(), values)
    gapped = SeriesScorer()
    out = [gapped.update(i * STEP_S if i < 150 else (i + 3) * STEP_S, v) for i, v in enumerate(values[:150])]
    for j, v in enumerate(with_gaps[150:153]):
        gap = gapped.update((150 + j) * STEP_S, v)
        assert gap.score is None and gap.value is None and gap.deviation is None
    out += [gapped.update((153 + i) * STEP_S, v) for i, v in enumerate(values[150:])]
    assert [p.score for p in out] == [p.score for p in plain]


def test_missing_data_never_scores_anomalous_even_after_a_long_outage() -> None:
    scorer = SeriesScorer()
    _feed(scorer, _noise(200))
    outage = [scorer.update((200 + i) * STEP_S, None) for i in range(500)]
    assert all(p.score is None for p in outage)


def test_flat_series_then_change_is_anomalous() -> None:
    points = _feed(SeriesScorer(), [5.0] * 200 + [6.0])
    assert max(_scores(points[:200])) == 0.0
    assert points[200].score is not None and points[200].score > 0.8


def test_warm_gives_the_same_state_as_scoring() -> None:
    values = _noise(300)
    history = [(i * STEP_S, v) for i, v in enumerate(values[:250])]
    warmed, scored = SeriesScorer(), SeriesScorer()
    warmed.warm(history)
    _feed(scored, values[:250])
    assert _feed(warmed, values[250:], 250 * STEP_S) == _feed(scored, values[250:], 250 * STEP_S)


def test_score_book_matches_one_scorer_per_series() -> None:
    rng = np.random.default_rng(11)
    series = rng.normal(50, 3, (5, 300))
    series[2, 200] = 500.0
    series[3, 100:120] = np.nan
    book = ScoreBook(5)
    scorers = [SeriesScorer() for _ in range(5)]
    for i in range(300):
        scores, baselines, deviations, _since = book.update(i * STEP_S, series[:, i])
        for j, scorer in enumerate(scorers):
            v = series[j, i]
            one = scorer.update(i * STEP_S, None if math.isnan(v) else float(v))
            assert (one.score is None and math.isnan(scores[j])) or one.score == scores[j]
            assert (one.deviation is None and math.isnan(deviations[j])) or one.deviation == deviations[j]
            assert (one.baseline is None and math.isnan(baselines[j])) or one.baseline == baselines[j]


def test_score_book_matches_one_scorer_per_series_once_the_weekly_correction_is_in_use() -> None:
    rng = np.random.default_rng(12)
    hours = 24 * 30
    t = np.arange(hours) * 3600.0
    weekend = ((t // 86_400) % 7 >= 5).astype(float)
    series = 100 + 30 * np.sin(2 * np.pi * t / 86_400) - 40 * weekend + rng.normal(0, 4, (3, hours))
    series[1, 600] = 400.0
    series[2, 500:530] = np.nan
    book = ScoreBook(3)
    scorers = [SeriesScorer() for _ in range(3)]
    for i in range(hours):
        scores, *_ = book.update(t[i], series[:, i])
        for j, scorer in enumerate(scorers):
            v = series[j, i]
            one = scorer.update(t[i], None if math.isnan(v) else float(v))
            assert (one.score is None and math.isnan(scores[j])) or one.score == scores[j]


def test_memory_per_series_is_fixed_and_small() -> None:
    small, large = ScoreBook(10), ScoreBook(1000)
    assert large.nbytes == 100 * small.nbytes
    assert small.nbytes / 10 <= 2048


def test_values_near_the_float_limit_score_in_the_unit_interval() -> None:
    scorer = SeriesScorer()
    _feed(scorer, _noise(400))
    for i, v in enumerate([1e308, -1e308, 1e308, 100.0]):
        point = scorer.update((400 + i) * STEP_S, v)
        assert point.score is not None and 0.0 <= point.score <= 1.0
    assert scorer.update(404 * STEP_S, 1e308).score is not None


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
maybe = st.one_of(st.none(), finite, st.just(math.nan), st.just(math.inf))


@settings(max_examples=60, deadline=None)
@given(st.lists(maybe, min_size=1, max_size=150))
def test_score_is_in_unit_interval_or_unknown(values: list[float | None]) -> None:
    for point in _feed(SeriesScorer(ScorerConfig(warmup_points=4, window=8)), values):
        assert point.score is None or 0.0 <= point.score <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)), min_size=2, max_size=120),
       st.data())
def test_appending_future_points_never_changes_past_scores(values: list[float | None], data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(values) - 1))
    config = ScorerConfig(warmup_points=4, window=8)
    prefix = _feed(SeriesScorer(config), values[:cut])
    full = _feed(SeriesScorer(config), values)
    assert full[:cut] == prefix



def _steady(shape: str, n: int, step_s: float, seed: int) -> list[float | None]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * step_s
    if shape == "gaussian":
        values = 250.0 + rng.normal(0, 12, n)
    elif shape == "poisson":
        values = rng.poisson(6.0, n).astype(float)
    else:  # a daily sine with noise
        values = 1000.0 + 400.0 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 30, n)
    return [float(v) for v in values]


SHAPES = ("gaussian", "poisson", "daily sine")


@pytest.mark.parametrize(("step_s", "points"), [(5.0, 120), (15.0, 2 * 5760)], ids=["10 min of 5 s", "2 days of 15 s"])
def test_steady_noisy_series_of_several_shapes_stay_quiet(step_s: float, points: int) -> None:
    """No point the workload combiner would call anomalous (threshold held `persistence` intervals) after warm-up.

    Three seeds of each shape, scored together through the batch path (which matches one scorer per series).
    """
    series = [_steady(shape, points, step_s, seed) for shape in SHAPES for seed in range(3)]
    book = ScoreBook(len(series))
    values = np.array(series, dtype=float)
    scores = np.array([np.nan_to_num(book.update(i * step_s, values[:, i])[0]) for i in range(points)]).T
    combiner = CombinerConfig()
    for k, row in enumerate(scores):
        assert _longest_run(list(row), combiner.threshold) < combiner.persistence, (SHAPES[k // 3], k % 3)


def test_a_steady_workload_stays_normal_for_ten_minutes_of_5s_scrapes() -> None:
    verdicts = WorkloadScorer(CombinerConfig())
    signals = {shape: _steady(shape, 120, 5.0, seed=4) for shape in SHAPES}
    states = [verdicts.observe(i * 5.0, {name: v[i] for name, v in signals.items()}).state for i in range(120)]
    assert states[-1] == "normal"
    assert "anomalous" not in states



def test_quiet_weekends_raise_fewer_alarms_once_the_weekly_correction_is_learnt() -> None:
    # 15-minute samples of a daily cycle whose weekends run 40 lower. The daily profile alone mixes
    # working days and weekends; with the weekly correction the weekend is expected.
    step_s = 900.0
    t = np.arange(int(35 * 86_400 / step_s)) * step_s
    weekend = ((t // 86_400) % 7 >= 5).astype(float)
    noise = np.random.default_rng(3).normal(0, 4, (5, len(t)))
    values = 100 + 30 * np.sin(2 * np.pi * t / 86_400) - 40 * weekend + noise
    late = t >= 21 * 86_400
    threshold = CombinerConfig().threshold

    def alarms(config: ScorerConfig) -> tuple[int, int]:
        book = ScoreBook(len(values), config)
        scores = np.array([np.nan_to_num(book.update(t[i], values[:, i])[0]) for i in range(len(t))]).T[:, late]
        return int((scores >= threshold).sum()), max(_longest_run(list(row), threshold) for row in scores)

    weekly, weekly_run = alarms(ScorerConfig())
    daily_only, _ = alarms(ScorerConfig(weekly_bins=0))
    assert weekly_run < CombinerConfig().persistence
    assert weekly <= daily_only / 2

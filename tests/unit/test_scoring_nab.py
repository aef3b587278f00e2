"""Our implementation of NAB's scoring rules, checked on a constructed corpus before it judges the scorer."""

from __future__ import annotations

import numpy as np
from bench.nab import NabFile, Profile, probationary_length, scaled_sigmoid, score_corpus

STANDARD = Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
LOW_FN = Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)


def _corpus() -> list[NabFile]:
    def file(name: str, rows: int, windows: tuple[tuple[int, int], ...]) -> NabFile:
        return NabFile(name, np.arange(rows) * 300.0, np.zeros(rows), windows)

    return [file("a.csv", 2000, ((600, 700), (1400, 1500))), file("b.csv", 1000, ((500, 560),)),
            file("quiet.csv", 1000, ())]


def _fire(corpus: list[NabFile], rows: dict[str, list[int]]) -> list[np.ndarray]:
    out = []
    for f in corpus:
        s = np.zeros(len(f.values))
        s[rows.get(f.name, [])] = 1.0
        out.append(s)
    return out


def test_null_detector_scores_zero_and_perfect_scores_hundred_in_every_profile() -> None:
    corpus = _corpus()
    perfect = _fire(corpus, {f.name: [a for a, _ in f.windows] for f in corpus})
    for profile in (STANDARD, LOW_FN):
        assert score_corpus(corpus, _fire(corpus, {}), profile).normalised == 0.0
        assert abs(score_corpus(corpus, perfect, profile).normalised - 100.0) < 1e-9


def test_early_detection_earns_more_than_late_and_only_the_first_counts() -> None:
    corpus = _corpus()
    early = score_corpus(corpus, _fire(corpus, {"b.csv": [505]}), STANDARD)
    late = score_corpus(corpus, _fire(corpus, {"b.csv": [555]}), STANDARD)
    both = score_corpus(corpus, _fire(corpus, {"b.csv": [505, 555]}), STANDARD)
    assert early.raw > late.raw > early.null
    assert both.raw == early.raw  # the later detection in the same window adds nothing


def test_false_positive_right_after_a_window_costs_less_than_far_away() -> None:
    corpus = _corpus()
    hit = [600]
    near = score_corpus(corpus, _fire(corpus, {"a.csv": [*hit, 705]}), STANDARD)
    far = score_corpus(corpus, _fire(corpus, {"a.csv": [*hit, 1100]}), STANDARD)
    only = score_corpus(corpus, _fire(corpus, {"a.csv": hit}), STANDARD)
    # All detections tie at 1.0, so the best threshold keeps both (dropping them would lose the hit too).
    assert near.detections == far.detections == 2
    assert 0 < only.raw - near.raw < 0.11 * 0.2  # five rows past a 101-row window: ~12% of fpWeight
    assert abs((only.raw - far.raw) - 0.11) < 1e-9  # four window widths away: the full fpWeight


def test_false_positive_before_the_first_window_costs_full_weight() -> None:
    corpus = _corpus()
    a, b = _fire(corpus, {"a.csv": [600, 400]}), _fire(corpus, {"a.csv": [600]})
    a[0][400] = b[0][600] = 1.0
    with_fp = score_corpus(corpus, a, STANDARD)
    without = score_corpus(corpus, b, STANDARD)
    assert abs((without.raw - with_fp.raw) - 0.11) < 1e-9


def test_probationary_rows_are_not_scored() -> None:
    corpus = _corpus()
    assert probationary_length(2000) == 300 and probationary_length(20_000) == 750
    early_noise = score_corpus(corpus, _fire(corpus, {"quiet.csv": list(range(0, 150))}), STANDARD)
    assert early_noise.raw == early_noise.null and early_noise.normalised == 0.0


def test_threshold_is_chosen_for_the_whole_corpus() -> None:
    corpus = _corpus()
    scores = _fire(corpus, {})
    scores[0][600] = 0.9  # a true detection
    scores[2][500] = 0.8  # a lower-scoring false positive in another file
    result = score_corpus(corpus, scores, STANDARD)
    assert result.threshold == 0.9 and result.detections == 1


def test_scaled_sigmoid_shape() -> None:
    assert abs(scaled_sigmoid(-1.0) - 0.98661) < 1e-4
    assert abs(scaled_sigmoid(0.0)) < 1e-12
    assert scaled_sigmoid(3.5) == -1.0

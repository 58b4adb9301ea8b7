"""deeppatch.reporting.stats against reference values computed independently of the module (by hand, from
closed forms written differently, or from published tables), on fixed inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deeppatch import results as codec
from deeppatch.errors import DeepPatchError
from deeppatch.reporting import stats

Z975 = 1.959963984540054  # standard normal 0.975 quantile (tables: 1.960)


def _correctness(n: int, accuracy: float, seed: int) -> np.ndarray:
    """Exactly round(accuracy * n) correct images in a seeded random order."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=bool)
    out[rng.permutation(n)[: round(accuracy * n)]] = True
    return out


def _flip(correct: np.ndarray, to_right: int, to_wrong: int, seed: int) -> np.ndarray:
    """A copy that turns `to_right` wrong images right and `to_wrong` right images wrong: c and b of McNemar."""
    rng = np.random.default_rng(seed)
    out = correct.copy()
    out[rng.choice(np.flatnonzero(~correct), to_right, replace=False)] = True
    out[rng.choice(np.flatnonzero(correct), to_wrong, replace=False)] = False
    return out


# --------------------------------------------------------------------------- Wilson


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857-872,
# Table II, method 3 (score interval without continuity correction). Re-checked here as the roots of the
# quadratic (p_hat - p)^2 = z^2 p (1 - p) / n (see test_wilson_matches_quadratic_roots).
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE)
def test_wilson_newcombe_table(k, n, low, high):
    iv = stats.wilson_interval(k, n)
    assert (round(iv.low, 4), round(iv.high, 4)) == (low, high)
    assert iv.method == "wilson" and iv.level == 0.95


@pytest.mark.parametrize(("k", "n"), [(81, 263), (15, 148), (1, 29), (29, 29), (500, 1000), (3, 10_000)])
def test_wilson_matches_quadratic_roots(k, n):
    z2 = Z975**2
    p = k / n
    roots = np.sort(np.roots([1 + z2 / n, -(2 * p + z2 / n), p * p]).real)
    iv = stats.wilson_interval(k, n)
    assert iv.low == pytest.approx(max(roots[0], 0.0), abs=1e-9)
    assert iv.high == pytest.approx(min(roots[1], 1.0), abs=1e-9)


def test_wilson_other_level_is_wider_or_narrower():
    # 90 %: z = 1.6448536269514722 (tables: 1.645); quadratic roots as above.
    z2 = 1.6448536269514722**2
    roots = np.sort(np.roots([1 + z2 / 263, -(2 * 81 / 263 + z2 / 263), (81 / 263) ** 2]).real)
    iv = stats.wilson_interval(81, 263, level=0.90)
    assert (iv.low, iv.high) == pytest.approx(tuple(roots), abs=1e-9)
    assert iv.high - iv.low < 0.3662 - 0.2553


def test_estimate_accuracy_one_seed_is_wilson_on_n():
    correct = _correctness(263, 81 / 263, seed=0)
    est = stats.estimate_accuracy(correct)
    assert est.value == pytest.approx(81 / 263)
    assert (round(est.interval.low, 4), round(est.interval.high, 4)) == (0.2553, 0.3662)
    assert (est.n_seeds, est.n_images) == (1, 263)


def test_summarize_one_seed_in_percent():
    est = stats.summarize_seeds([100 * 81 / 263], n_images=263, scale=100)
    assert (round(est.interval.low, 2), round(est.interval.high, 2)) == (25.53, 36.62)
    assert stats.format_estimate(est) == "30.80 (95 % CI [25.53, 36.62])"


# --------------------------------------------------------------------------- t interval and seed bootstrap


def test_t_interval_three_seeds_by_hand():
    # mean 0.72, s = 0.02 (ddof 1), se = 0.02 / sqrt(3). For 2 degrees of freedom the t quantile has the
    # closed form t_p = (2p - 1) * sqrt(2 / (4 p (1 - p))): t_0.975 = 4.3027 (tables: 4.303).
    t2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
    half = t2 * 0.02 / math.sqrt(3)
    iv = stats.t_interval([0.70, 0.72, 0.74])
    assert t2 == pytest.approx(4.303, abs=5e-4)
    assert (iv.low, iv.high) == pytest.approx((0.72 - half, 0.72 + half), abs=1e-12)
    assert (iv.low, iv.high) == pytest.approx((0.67032, 0.76968), abs=1e-5)


def test_t_interval_five_seeds_table_quantile():
    # Accuracies in percent; t(0.975, 4) = 2.7764 (Student t table: 2.776); mean 71.28, s = 0.48683.
    values = [71.2, 70.8, 72.0, 71.5, 70.9]
    s = math.sqrt(sum((v - 71.28) ** 2 for v in values) / 4)
    est = stats.summarize_seeds(values)
    assert est.value == pytest.approx(71.28)
    assert s == pytest.approx(0.48683, abs=1e-5)
    assert (est.interval.low, est.interval.high) == pytest.approx((70.6755, 71.8845), abs=1e-4)
    assert est.interval.method == "t" and est.n_seeds == 5


def test_estimate_accuracy_several_seeds_uses_per_seed_means():
    correct = np.stack([_correctness(1000, a, seed=i) for i, a in enumerate([0.70, 0.72, 0.74])])
    est = stats.estimate_accuracy(correct)
    assert est.value == pytest.approx(0.72)
    assert (est.interval.low, est.interval.high) == pytest.approx((0.67032, 0.76968), abs=1e-5)
    assert (est.n_seeds, est.n_images) == (3, 1000)


def test_bootstrap_interval_seeded_and_inside_the_range():
    values = [0.70, 0.72, 0.74, 0.71, 0.75]
    a = stats.bootstrap_interval(values, seed=3)
    assert a == stats.bootstrap_interval(values, seed=3)
    assert a.method == "bootstrap-percentile"
    assert 0.70 <= a.low < 0.724 < a.high <= 0.75
    # The percentile bootstrap of a mean is narrower than the t interval with few values, never wider here.
    t = stats.t_interval(values)
    assert a.high - a.low < t.high - t.low
    assert stats.summarize_seeds(values, method="bootstrap", seed=3).interval == a


# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(("c", "b"), [(9, 2), (5, 0), (7, 7), (20, 3), (2, 9)])
def test_mcnemar_exact_against_binomial_sum(c, b):
    ref = _correctness(500, 0.6, seed=1)
    cand = _flip(ref, to_right=c, to_wrong=b, seed=2)
    m = b + c
    expected = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m)
    test = stats.mcnemar_test(ref, cand, method="exact")
    assert test.p_value == pytest.approx(expected, rel=1e-9)
    assert test.diff == pytest.approx((c - b) / 500)
    assert test.method == "mcnemar-exact" and (test.n_images, test.n_seeds) == (500, 1)


def test_mcnemar_exact_worked_value():
    # b = 2, c = 9: 2 * (C(11,0) + C(11,1) + C(11,2)) / 2^11 = 2 * 67 / 2048.
    ref = _correctness(300, 0.5, seed=3)
    assert stats.mcnemar_test(ref, _flip(ref, 9, 2, seed=4)).p_value == pytest.approx(134 / 2048, rel=1e-12)


def test_mcnemar_chi2_by_hand():
    # b = 10, c = 30: (|10 - 30| - 1)^2 / 40 = 9.025; with 1 df, P(X > x) = erfc(sqrt(x / 2)) = 0.0026631.
    ref = _correctness(100, 0.5, seed=5)
    test = stats.mcnemar_test(ref, _flip(ref, 30, 10, seed=6))
    assert test.method == "mcnemar-chi2-cc"  # b + c = 40 >= 25: auto picks chi-square
    assert test.p_value == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-9)
    assert test.p_value == pytest.approx(0.0026631, abs=1e-7)
    assert test.diff == pytest.approx(0.20)
    # Agresti-Min CI, by hand: b' = 10.5, c' = 30.5, n' = 102, diff' = 20/102,
    # se = sqrt(41 - 20^2/102)/102 = 0.059698 -> [0.07907, 0.31308].
    assert (test.ci_low, test.ci_high) == pytest.approx((0.079072, 0.313085), abs=1e-6)


def test_mcnemar_auto_rule_switches_at_25_discordant():
    ref = _correctness(400, 0.5, seed=7)
    assert stats.mcnemar_test(ref, _flip(ref, 16, 8, seed=8)).method == "mcnemar-exact"  # 24
    assert stats.mcnemar_test(ref, _flip(ref, 17, 8, seed=8)).method == "mcnemar-chi2-cc"  # 25


def test_mcnemar_identical_gives_p_one():
    ref = _correctness(50, 0.5, seed=9)
    for method in ("auto", "exact", "chi2"):
        test = stats.mcnemar_test(ref, ref.copy(), method=method)
        assert (test.diff, test.p_value) == (0.0, 1.0)
        assert test.ci_low < 0 < test.ci_high


# --------------------------------------------------------------------------- hierarchical paired bootstrap


def _seeds(n_seeds: int, n: int, accuracy: float, seed: int) -> np.ndarray:
    return np.stack([_correctness(n, accuracy, seed=seed + s) for s in range(n_seeds)])


def test_bootstrap_large_difference_is_significant():
    ref = _seeds(3, 2000, 0.70, seed=10)
    cand = np.stack([_flip(r, to_right=400, to_wrong=40, seed=20 + i) for i, r in enumerate(ref)])  # +18 pp
    test = stats.paired_bootstrap(ref, cand, n_resamples=2000, seed=0)
    assert test.diff == pytest.approx(0.18)
    assert test.p_value == pytest.approx(2 / 2001)  # no resample reaches 0: the smallest p, never 0
    assert 0 < test.ci_low < 0.18 < test.ci_high
    assert (test.method, test.n_seeds, test.n_images) == ("paired-bootstrap", 3, 2000)
    assert stats.paired_test(ref, cand, n_resamples=2000).method == "paired-bootstrap"


def test_bootstrap_identical_inputs():
    ref = _seeds(3, 500, 0.8, seed=30)
    test = stats.paired_bootstrap(ref, ref.copy(), n_resamples=1000, seed=0)
    assert (test.diff, test.p_value, test.ci_low, test.ci_high) == (0.0, 1.0, 0.0, 0.0)


def test_bootstrap_noise_is_not_significant():
    ref = _seeds(3, 2000, 0.75, seed=40)
    # 30 images fixed, 28 broken per seed: +0.1 pp, far inside the noise.
    cand = np.stack([_flip(r, to_right=30, to_wrong=28, seed=50 + i) for i, r in enumerate(ref)])
    test = stats.paired_bootstrap(ref, cand, n_resamples=2000, seed=0)
    assert test.p_value > 0.5
    assert test.ci_low < 0 < test.ci_high
    assert stats.format_paired(test, scale=100).endswith(", n.s.)")


def test_bootstrap_seed_level_matches_exact_resampling_distribution():
    # Seed 1 gains on every image, seeds 0 and 2 change nothing: image resampling is then inert and the
    # statistic is K/3 with K ~ Binomial(3, 1/3) the draws of seed 1. P(K = 0) = 8/27, so
    # p = 2 * P(diff* <= 0) = 16/27 = 0.593 and the 95 % percentile CI is [0, 1] (P(K <= 2) = 26/27 < 0.975).
    ref = np.zeros((3, 200), dtype=bool)
    cand = ref.copy()
    cand[1] = True
    test = stats.paired_bootstrap(ref, cand, n_resamples=20_000, seed=1)
    assert test.diff == pytest.approx(1 / 3)
    assert test.p_value == pytest.approx(16 / 27, abs=0.02)
    assert (test.ci_low, test.ci_high) == (0.0, 1.0)


def test_bootstrap_image_level_spread_matches_standard_error():
    # One seed: the bootstrap sd of a mean difference is the plug-in se sqrt(var(d) / n); the percentile
    # CI width is then about 2 * 1.96 * se.
    ref = _correctness(2000, 0.7, seed=60)
    cand = _flip(ref, to_right=150, to_wrong=90, seed=61)
    d = cand.astype(float) - ref.astype(float)
    se = d.std() / math.sqrt(d.size)
    test = stats.paired_bootstrap(ref, cand, n_resamples=8000, seed=2)
    assert (test.ci_high - test.ci_low) == pytest.approx(2 * Z975 * se, rel=0.06)
    assert test.diff == pytest.approx(0.03)


def test_bootstrap_one_row_reference_is_repeated_over_seeds():
    ref = _correctness(1000, 0.6, seed=70)
    cand = np.stack([_flip(ref, 100, 10, seed=71 + i) for i in range(3)])
    a = stats.paired_bootstrap(ref, cand, n_resamples=500, seed=4)
    b = stats.paired_bootstrap(np.stack([ref] * 3), cand, n_resamples=500, seed=4)
    assert a == b and a.diff == pytest.approx(0.09)


def test_bootstrap_deterministic_under_seed_and_fast():
    ref = _seeds(3, 2000, 0.7, seed=80)
    cand = np.stack([_flip(r, 60, 40, seed=90 + i) for i, r in enumerate(ref)])
    a = stats.paired_bootstrap(ref, cand, n_resamples=10_000, seed=5)
    assert a == stats.paired_bootstrap(ref, cand, n_resamples=10_000, seed=5)
    assert a != stats.paired_bootstrap(ref, cand, n_resamples=10_000, seed=6)


def test_bootstrap_pattern_counts_match_resampling_images():
    # The fast path draws how often each distinct image pattern is picked; the plain path draws images.
    # Both must give the same distribution of the resampled mean (here: mean, sd and quantiles).
    ref = _seeds(3, 600, 0.7, seed=81)
    cand = np.stack([_flip(r, 50, 30, seed=91 + i) for i, r in enumerate(ref)])
    d = cand.astype(float) - ref.astype(float)
    fast = stats._hierarchical_means(d, 40_000, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    plain = np.empty(40_000)
    for i in range(plain.size):  # the textbook loop: seeds with replacement, then images with replacement
        seeds = rng.integers(0, 3, size=3)
        images = rng.integers(0, 600, size=600)
        plain[i] = d[seeds][:, images].mean()
    assert fast.mean() == pytest.approx(plain.mean(), abs=3e-4)
    assert fast.std() == pytest.approx(plain.std(), rel=0.03)
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(plain, q), abs=2e-3)


# --------------------------------------------------------------------------- per-seed t tests


def test_seed_test_paired_by_hand():
    ref, cand = [70.0, 71.0, 72.0], [71.0, 73.0, 73.5]  # d = [1, 2, 1.5]: mean 1.5, sd 0.5, se 0.5/sqrt(3)
    t_stat = 1.5 / (0.5 / math.sqrt(3))  # 5.196; with 2 df the two-sided p is 1 - t / sqrt(2 + t^2)
    test = stats.seed_test(ref, cand)
    assert test.p_value == pytest.approx(1 - t_stat / math.sqrt(2 + t_stat**2), rel=1e-9)
    t2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
    assert (test.ci_low, test.ci_high) == pytest.approx((1.5 - t2 * 0.5 / math.sqrt(3), 1.5 + t2 * 0.5 / math.sqrt(3)))
    assert (test.method, test.n_images, test.n_seeds) == ("paired-t", None, 3)


def test_seed_test_welch_by_hand():
    from scipy.stats import t as student_t
    from scipy.stats import ttest_ind

    ref, cand = [70.0, 72.0, 74.0], [75.0, 76.0, 77.0, 78.0]
    va, vb = 4.0 / 3, (5 / 3) / 4  # var/n: 1.33333 and 0.41667
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite: 3.0625 / 0.946759 = 3.2347
    se = math.sqrt(va + vb)  # sqrt(1.75)
    test = stats.seed_test(ref, cand, paired=False)
    assert test.diff == pytest.approx(4.5)
    assert df == pytest.approx(3.2347, abs=1e-4)
    assert test.p_value == pytest.approx(2 * student_t.sf(4.5 / se, df), rel=1e-9)
    assert test.p_value == pytest.approx(ttest_ind(cand, ref, equal_var=False).pvalue, rel=1e-9)
    half = student_t.ppf(0.975, df) * se
    assert (test.ci_low, test.ci_high) == pytest.approx((4.5 - half, 4.5 + half))
    assert test.method == "welch-t"


# --------------------------------------------------------------------------- Holm


def test_holm_worked_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm_significant([0.01, 0.04, 0.03, 0.005]).tolist() == [True, False, False, True]


def test_holm_caps_at_one_and_is_monotone():
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])
    p = np.random.default_rng(0).random(30) ** 3
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    assert stats.holm([0.02]) == pytest.approx([0.02])


def test_holm_significance_uses_adjusted_p():
    # Uncorrected all three are below 0.05; Holm keeps only the first (0.01*3 = 0.03; 0.04*2 = 0.08).
    assert stats.holm_significant([0.01, 0.04, 0.045]).tolist() == [True, False, False]
    assert stats.holm_significant([0.01, 0.04, 0.045], alpha=0.10).tolist() == [True, True, True]


# --------------------------------------------------------------------------- best vs runner-up


def test_significantly_best_per_sample():
    base = _correctness(2000, 0.70, seed=100)
    close = _flip(base, 25, 20, seed=101)  # +0.25 pp: noise
    clear = _flip(base, 200, 20, seed=102)  # +9 pp
    assert stats.significantly_best([base, close]) is None
    assert stats.significantly_best([base, clear, close]) == 1
    best, runner_up, test = stats.compare_best([base, clear, close])
    assert (best, runner_up) == (1, 2) and test.diff > 0
    # "lower is better" on the same arrays (e.g. attack-success flags): the base is the lowest.
    assert stats.significantly_best([close, clear, base], better="lower") is None  # base vs close: noise
    assert stats.significantly_best([clear, base], better="lower") == 1


def test_significantly_best_several_seeds_per_sample():
    base = _seeds(3, 1000, 0.7, seed=110)
    clear = np.stack([_flip(r, 150, 10, seed=120 + i) for i, r in enumerate(base)])
    close = np.stack([_flip(r, 12, 10, seed=130 + i) for i, r in enumerate(base)])
    assert stats.significantly_best([base, clear], n_resamples=2000) == 1
    assert stats.significantly_best([base, close], n_resamples=2000) is None


def test_significantly_best_per_seed_values():
    clear = [[70.0, 71.0, 70.5], [80.0, 81.2, 80.4], [60.0, 61.0, 60.2]]
    assert stats.significantly_best(clear) == 1
    assert stats.significantly_best(clear, better="lower") == 2
    noisy = [[70.0, 71.0, 72.0], [70.5, 70.2, 71.9]]
    assert stats.significantly_best(noisy) is None
    tie = [[70.0, 71.0], [70.0, 71.0]]
    assert stats.significantly_best(tie) is None


# --------------------------------------------------------------------------- formatting


def test_format_paired_and_p():
    ns = stats.PairedTest(-0.0005, -0.003, 0.002, 0.6, "mcnemar-exact", 1000, 1)
    assert stats.format_paired(ns, scale=100) == "-0.05 (95 % CI [-0.30, 0.20], n.s.)"
    sig = stats.PairedTest(0.012, 0.008, 0.016, 0.004, "paired-bootstrap", 2000, 3)
    assert stats.format_paired(sig, scale=100) == "+1.20 (95 % CI [0.80, 1.60], p < 0.01)"
    assert stats.format_paired(sig, scale=100, p_value=0.2).endswith("n.s.)")  # e.g. Holm-adjusted
    assert [stats.format_p(p) for p in (0.0004, 0.004, 0.032, 0.05, 0.0501)] == [
        "p < 0.001", "p < 0.01", "p = 0.03", "p = 0.05", "n.s."]
    assert sig.significant() and not ns.significant()


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize("length", [1, 7, 8, 9, 13, 1000, 1001, 10_007])
def test_codec_round_trips(length):
    correct = np.random.default_rng(length).random(length) < 0.7
    data, n = codec.pack_correctness(correct)
    assert n == length and len(data) == math.ceil(length / 8)  # 1 bit per image
    back = codec.unpack_correctness(data, n)
    assert back.dtype == np.bool_ and np.array_equal(back, correct)
    text = json.dumps(codec.encode_correctness(correct))
    assert np.array_equal(codec.decode_correctness(json.loads(text)), correct)


def test_codec_bit_order_is_fixed():
    # MSB first: [1,0,1,1,0,0,0,0, 1] -> 0b10110000, 0b10000000.
    assert codec.pack_correctness([True, False, True, True, False, False, False, False, True]) == (b"\xb0\x80", 9)


def test_codec_rejects_bad_data():
    with pytest.raises(DeepPatchError, match="nonzero padding"):
        codec.unpack_correctness(b"\xff", 5)
    with pytest.raises(DeepPatchError, match="cannot hold 17 bits"):
        codec.unpack_correctness(b"\x00\x00", 17)
    with pytest.raises(DeepPatchError, match="one seed at a time"):
        codec.pack_correctness(np.ones((2, 8), dtype=bool))
    with pytest.raises(DeepPatchError, match="not an encoded"):
        codec.decode_correctness({"n": 3})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(DeepPatchError, match="alpha must lie in"):
        stats.holm_significant([0.01], alpha=alpha)
    with pytest.raises(DeepPatchError, match=f"got {alpha!r}"):
        stats.significantly_best([[1.0, 2.0], [3.0, 4.0]], alpha=alpha)


def test_clear_errors():
    ok = np.ones(10, dtype=bool)
    cases = [
        (lambda: stats.wilson_interval(0, 0), "n > 0 images; got n=0"),
        (lambda: stats.wilson_interval(11, 10), "got k=11, n=10"),
        (lambda: stats.paired_test(ok, np.ones(9, dtype=bool)), "same images; got 10 and 9"),
        (lambda: stats.paired_test(np.ones((2, 10), bool), np.ones((3, 10), bool)), "2 vs 3"),
        (lambda: stats.paired_test(np.array([], dtype=bool), np.array([], dtype=bool)), "empty"),
        (lambda: stats.mcnemar_test(ok, np.full(10, 2)), "got value 2"),
        (lambda: stats.mcnemar_test(np.ones((2, 10), bool), np.ones((2, 10), bool)), "one seed"),
        (lambda: stats.t_interval([0.7]), "at least 2 values"),
        (lambda: stats.t_interval([]), "empty"),
        (lambda: stats.t_interval([0.7, float("nan")]), "finite"),
        (lambda: stats.holm([]), "empty"),
        (lambda: stats.holm([0.2, 1.3]), "got 1.3"),
        (lambda: stats.summarize_seeds([75.0], scale=100), "pass n_images"),
        (lambda: stats.estimate_accuracy(ok, level=95), "got 95"),
        (lambda: stats.estimate_accuracy(np.ones((2, 10), bool), method="wald"), "'wald'"),
        (lambda: stats.paired_bootstrap(ok, ok, n_resamples=0), "got 0"),
        (lambda: stats.significantly_best([ok]), "got 1"),
        (lambda: stats.significantly_best([ok, ok], better="up"), "'up'"),
        (lambda: stats.significantly_best([ok, np.ones(9, bool)]), "differ in shape"),
        (lambda: stats.significantly_best([ok, [0.5, 0.6]]), "mix"),
        (lambda: stats.seed_test([1.0, 2.0], [1.0, 2.0, 3.0]), "same seeds; got 2 and 3"),
    ]
    for call, message in cases:
        with pytest.raises(DeepPatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            call()

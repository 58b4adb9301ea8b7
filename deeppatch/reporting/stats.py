"""The statistics behind every number in a report: intervals, paired tests, Holm, best-vs-runner-up, codec.

Why: a table of means hides whether a difference is real. Every accuracy here carries an interval and every
change against the model under maintenance a paired test on the same images, so a reader can tell a real
gain from seed or test-set noise.

- One seed: accuracy gets a Wilson score interval on n (the number of images); a change gets McNemar's
  test on the same images (`mcnemar_test`).
- Several seeds: accuracy gets the mean and a Student t interval across seeds (or a seeded percentile
  bootstrap); a change gets a hierarchical paired bootstrap over seeds and images (`paired_bootstrap`).
- A table's family of comparisons is corrected with Holm (`holm`, `holm_significant`).
- `significantly_best` names the best candidate only when the paired test separates it from the runner-up.
- `pack_correctness` / `encode_correctness` store per-sample correctness at 1 bit per image for side files.

Per-sample inputs are correctness arrays (booleans): shape (n_images,) for one seed or (n_seeds, n_images)
for several, both models evaluated on the SAME images (and, with several seeds, row i of both is seed i).
Differences are always candidate minus reference. Values are fractions unless a `scale` says otherwise
(the result rows store accuracy in percent: pass scale=100). Significance means p <= alpha throughout,
which is Holm's rejection rule. Every resampling uses its own `numpy.random.Generator` seeded from the
`seed` argument, so the same inputs and seed give the same outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from deeppatch.errors import DeepPatchError

HIGHER = "higher"
LOWER = "lower"
EXACT_BELOW = 25  # McNemar "auto": exact binomial test when the discordant pairs b + c are fewer than this
_CHUNK_CELLS = 1_000_000  # bootstrap work per chunk (resamples x images): bounds memory, keeps numpy busy


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high] at `level`, with the method that made it (for the report's notes)."""

    low: float
    high: float
    method: str
    level: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Estimate:
    """A point value with its interval; n_images is None when only per-seed values were known."""

    value: float
    interval: Interval
    n_seeds: int
    n_images: int | None


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison: diff = candidate - reference, its CI at `level`, the two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    n_images: int | None
    n_seeds: int
    level: float = 0.95

    def significant(self, alpha: float = 0.05) -> bool:
        """Significant at `alpha` without correction; use `holm_significant` for a family of comparisons."""
        return _significant(self.p_value, _check_alpha(alpha))


# --------------------------------------------------------------------------- intervals for one value


def wilson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for k successes in n trials: unlike the Wald interval it stays inside [0, 1]
    and keeps its coverage near 0 and 1 (Newcombe 1998), where repaired models' accuracies often sit."""
    _check_level(level)
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise DeepPatchError(f"Wilson interval needs integer counts; got k={k!r}, n={n!r}")
    if n <= 0:
        raise DeepPatchError(f"Wilson interval needs n > 0 images; got n={n}")
    if not 0 <= k <= n:
        raise DeepPatchError(f"Wilson interval needs 0 <= k <= n; got k={k}, n={n}")
    low, high = _wilson(k / n, int(n), level)
    return Interval(low, high, "wilson", level)


def t_interval(values: ArrayLike, level: float = 0.95) -> Interval:
    """Student t interval for the mean of per-seed values: with 3-5 seeds the normal quantile would be far
    too narrow. A zero spread across seeds gives a zero-width interval (image noise is not in it)."""
    _check_level(level)
    x = _as_values(values, "values", min_len=2)
    n = x.size
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    mean = float(x.mean())
    return Interval(mean - half, mean + half, "t", level)


def bootstrap_interval(values: ArrayLike, level: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval for the mean of per-seed values (seeded, vectorised). Offered next to
    the t interval for skewed values; with very few seeds it has few distinct resamples and runs narrow."""
    _check_level(level)
    _check_resamples(n_resamples)
    x = _as_values(values, "values", min_len=2)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(low), float(high), "bootstrap-percentile", level)


def estimate_accuracy(correct: ArrayLike, level: float = 0.95, method: str = "t", n_resamples: int = 10_000,
                      seed: int = 0) -> Estimate:
    """Accuracy (a fraction) of per-sample correctness with its interval: Wilson on n for one seed, the
    mean over seeds with a t (method="t") or percentile bootstrap (method="bootstrap") interval for several."""
    c = _as_correct(correct, "correct")
    if c.shape[0] == 1:
        n = c.shape[1]
        k = int(c.sum())
        return Estimate(k / n, wilson_interval(k, n, level), 1, n)
    per_seed = c.mean(axis=1)
    interval = _seed_interval(per_seed, level, method, n_resamples, seed)
    return Estimate(float(per_seed.mean()), interval, c.shape[0], c.shape[1])


def summarize_seeds(values: ArrayLike, n_images: int | None = None, scale: float = 1.0, level: float = 0.95,
                    method: str = "t", n_resamples: int = 10_000, seed: int = 0) -> Estimate:
    """Mean and interval of per-seed accuracies when only the values are stored (the result rows).

    Several seeds: a t (or bootstrap) interval across seeds. One seed: a Wilson interval on n_images, so
    `n_images` is then required. `scale` is the unit of `values` (100 for percent); the interval is returned
    in the same unit.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise DeepPatchError(f"scale must be a positive number; got {scale!r}")
    x = _as_values(values, "values", min_len=1)
    if x.size >= 2:
        interval = _seed_interval(x, level, method, n_resamples, seed)
        return Estimate(float(x.mean()), interval, x.size, n_images)
    _check_level(level)
    if n_images is None:
        raise DeepPatchError("one seed: pass n_images (the number of test images) for a Wilson interval")
    if isinstance(n_images, bool) or int(n_images) != n_images or n_images <= 0:
        raise DeepPatchError(f"n_images must be a positive integer; got {n_images!r}")
    p = float(x[0]) / scale
    if not 0 <= p <= 1:
        raise DeepPatchError(f"accuracy {float(x[0])!r} is outside [0, {scale:g}] (scale={scale:g})")
    low, high = _wilson(p, int(n_images), level)
    return Estimate(float(x[0]), Interval(low * scale, high * scale, "wilson", level), 1, int(n_images))


# --------------------------------------------------------------------------- paired tests


def mcnemar_test(reference: ArrayLike, candidate: ArrayLike, level: float = 0.95,
                 method: str = "auto") -> PairedTest:
    """McNemar's test of candidate vs reference on the same images (one seed): only the discordant images
    carry information, b = reference right and candidate wrong, c = the reverse.

    method: "exact" (two-sided binomial test of c in b + c at 1/2), "chi2" (chi-square with continuity
    correction, (|b - c| - 1)^2 / (b + c), 1 df) or "auto": exact when b + c < 25 (EXACT_BELOW), where the
    chi-square approximation is poor, chi-square otherwise. b + c = 0 gives p = 1.
    The CI of the difference (c - b) / n is the Agresti-Min (2005) interval: the Wald interval for matched
    proportions after adding 1/2 to each cell of the 2x2 table, which keeps coverage when b + c is small.
    """
    _check_level(level)
    if method not in ("auto", "exact", "chi2"):
        raise DeepPatchError(f"unknown McNemar method {method!r}; valid choices: auto, chi2, exact")
    ref, cand = _paired_arrays(reference, candidate)
    if ref.shape[0] != 1:
        raise DeepPatchError(f"McNemar's test is for one seed; got {ref.shape[0]} seeds (use paired_bootstrap)")
    ref, cand = ref[0], cand[0]
    n = ref.size
    b = int(np.count_nonzero(ref & ~cand))
    c = int(np.count_nonzero(~ref & cand))
    discordant = b + c
    if method == "auto":
        method = "exact" if discordant < EXACT_BELOW else "chi2"
    if discordant == 0:
        p = 1.0
    elif method == "exact":
        p = float(sps.binomtest(min(b, c), discordant, 0.5).pvalue)
    else:
        statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
        p = float(sps.chi2.sf(statistic, 1))
    low, high = _agresti_min(b, c, n, level)
    name = "mcnemar-exact" if method == "exact" else "mcnemar-chi2-cc"
    return PairedTest((c - b) / n, low, high, min(p, 1.0), name, n, 1, level)


def paired_bootstrap(reference: ArrayLike, candidate: ArrayLike, level: float = 0.95,
                     n_resamples: int = 10_000, seed: int = 0) -> PairedTest:
    """Hierarchical paired bootstrap of the mean accuracy difference over seeds AND images.

    Each resample draws seeds with replacement and images with replacement; the images are shared by the
    two models and by all seeds (one test set), so one image draw applies to every row of both models.
    Row i of both inputs is seed i; a reference with one row (a model under maintenance evaluated once) is
    compared with every seed of the candidate. CI: percentile interval of the resampled differences.
    p-value (two-sided, by inverting the percentile interval so the two never disagree):
    2 * min(1 + #{diff* <= 0}, 1 + #{diff* >= 0}) / (n_resamples + 1), capped at 1.
    """
    _check_level(level)
    _check_resamples(n_resamples)
    ref, cand = _paired_arrays(reference, candidate)
    d = cand.astype(np.float64) - ref.astype(np.float64)
    n_seeds, n_images = d.shape
    diffs = _hierarchical_means(d, n_resamples, np.random.default_rng(seed))
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    tail = int(min(np.count_nonzero(diffs <= 0), np.count_nonzero(diffs >= 0)))
    p = min(1.0, 2 * (1 + tail) / (n_resamples + 1))
    return PairedTest(float(d.mean()), float(low), float(high), p, "paired-bootstrap", n_images, n_seeds, level)


def paired_test(reference: ArrayLike, candidate: ArrayLike, level: float = 0.95, n_resamples: int = 10_000,
                seed: int = 0) -> PairedTest:
    """The report's test for a change on the same images: McNemar ("auto") for one seed, the hierarchical
    paired bootstrap for several."""
    ref, cand = _paired_arrays(reference, candidate)
    if ref.shape[0] == 1:
        return mcnemar_test(ref, cand, level)
    return paired_bootstrap(ref, cand, level, n_resamples, seed)


def seed_test(reference: ArrayLike, candidate: ArrayLike, paired: bool = True, level: float = 0.95) -> PairedTest:
    """t test on per-seed values when per-sample correctness is not stored: paired by seed (row i of both is
    seed i, as the report pairs Δ clean) or Welch's unequal-variance test. Weak with 3 seeds, but honest.
    Identical nonzero differences on every seed (zero spread) give p = 0."""
    _check_level(level)
    ref = _as_values(reference, "reference", min_len=2)
    cand = _as_values(candidate, "candidate", min_len=2)
    if paired:
        if ref.size != cand.size:
            raise DeepPatchError(f"paired seed test needs the same seeds; got {ref.size} and {cand.size} values")
        d = cand - ref
        n = d.size
        diff = float(d.mean())
        se = float(d.std(ddof=1)) / math.sqrt(n)
        df = float(n - 1)
        name = "paired-t"
    else:
        va, vb = ref.var(ddof=1) / ref.size, cand.var(ddof=1) / cand.size
        diff = float(cand.mean() - ref.mean())
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (ref.size - 1) + vb**2 / (cand.size - 1)) if se > 0 else 1.0
        n = min(ref.size, cand.size)
        name = "welch-t"
    if se == 0:
        return PairedTest(diff, diff, diff, 1.0 if diff == 0 else 0.0, name, None, n, level)
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    return PairedTest(diff, diff - half, diff + half, min(p, 1.0), name, None, n, level)


# --------------------------------------------------------------------------- families and the best


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order: controls the family-wise error of a table's
    comparisons without Bonferroni's loss of power. Adjusted values are monotone in p and capped at 1."""
    p = _as_values(p_values, "p_values", min_len=1)
    if np.any((p < 0) | (p > 1)):
        bad = p[(p < 0) | (p > 1)][0]
        raise DeepPatchError(f"p-values must lie in [0, 1]; got {float(bad)!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def holm_significant(p_values: ArrayLike, alpha: float = 0.05) -> np.ndarray:
    """Which comparisons of the family stay significant at `alpha` after Holm (adjusted p <= alpha)."""
    return _significant(holm(p_values), _check_alpha(alpha))


def compare_best(candidates: Sequence[ArrayLike], better: str = HIGHER, paired: bool = True,
                 n_resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[int, int, PairedTest]:
    """The best candidate, the runner-up and the paired test of best vs runner-up (diff = best - runner-up).

    Boolean arrays are per-sample correctness (all the same shape; `paired_test` compares them); other
    numbers are 1-D per-seed values (`seed_test`, paired by seed unless paired=False). Ties go to the
    earlier candidate.
    """
    if better not in (HIGHER, LOWER):
        raise DeepPatchError(f"unknown direction {better!r}; valid choices: {HIGHER}, {LOWER}")
    if len(candidates) < 2:
        raise DeepPatchError(f"best vs runner-up needs at least two candidates; got {len(candidates)}")
    arrays = [np.asarray(c) for c in candidates]
    kinds = {a.dtype == np.bool_ for a in arrays}
    if len(kinds) != 1:
        raise DeepPatchError("candidates mix per-sample booleans and per-seed values; pass one kind")
    per_sample = kinds.pop()
    if per_sample:
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise DeepPatchError(f"candidates' correctness arrays differ in shape: {sorted(shapes)}")
        scores = np.array([_as_correct(a, f"candidates[{i}]").mean() for i, a in enumerate(arrays)])
    else:
        scores = np.array([_as_values(a, f"candidates[{i}]", min_len=1).mean() for i, a in enumerate(arrays)])
    order = np.argsort(-scores if better == HIGHER else scores, kind="stable")
    best, runner_up = int(order[0]), int(order[1])
    if per_sample:
        test = paired_test(arrays[runner_up], arrays[best], level, n_resamples, seed)
    else:
        test = seed_test(arrays[runner_up], arrays[best], paired, level)
    return best, runner_up, test


def significantly_best(candidates: Sequence[ArrayLike], better: str = HIGHER, alpha: float = 0.05,
                       paired: bool = True, n_resamples: int = 10_000, seed: int = 0) -> int | None:
    """Index of the best candidate if the paired test separates it from the runner-up at `alpha`, else None:
    a bold "best" in a table should mean more than noise. Arguments as in `compare_best`."""
    alpha = _check_alpha(alpha)
    best, _, test = compare_best(candidates, better, paired, n_resamples, seed)
    ahead = test.diff > 0 if better == HIGHER else test.diff < 0
    return best if ahead and _significant(test.p_value, alpha) else None


# --------------------------------------------------------------------------- text


def format_p(p_value: float, alpha: float = 0.05) -> str:
    """"n.s." above alpha, else "p < 0.001", "p < 0.01" or "p = 0.03"."""
    alpha = _check_alpha(alpha)
    if not (math.isfinite(p_value) and 0 <= p_value <= 1):
        raise DeepPatchError(f"p-value must lie in [0, 1]; got {p_value!r}")
    if not _significant(p_value, alpha):
        return "n.s."
    if p_value < 0.001:
        return "p < 0.001"
    if p_value < 0.01:
        return "p < 0.01"
    return f"p = {p_value:.2f}"


def format_paired(test: PairedTest, decimals: int = 2, scale: float = 1.0, alpha: float = 0.05,
                  p_value: float | None = None) -> str:
    """E.g. "-0.05 (95 % CI [-0.30, 0.20], n.s.)" or "+1.20 (95 % CI [0.80, 1.60], p < 0.01)".

    scale=100 prints fractions as percentage points; pass the Holm-adjusted `p_value` of the table's family
    to print that instead of the test's own.
    """
    p = test.p_value if p_value is None else p_value
    return (f"{test.diff * scale:+.{decimals}f} ({_level_text(test.level)} CI "
            f"[{test.ci_low * scale:.{decimals}f}, {test.ci_high * scale:.{decimals}f}], {format_p(p, alpha)})")


def format_estimate(estimate: Estimate, decimals: int = 2, scale: float = 1.0) -> str:
    """E.g. "71.20 (95 % CI [70.10, 72.30])"."""
    iv = estimate.interval
    return (f"{estimate.value * scale:.{decimals}f} ({_level_text(iv.level)} CI "
            f"[{iv.low * scale:.{decimals}f}, {iv.high * scale:.{decimals}f}])")


# --------------------------------------------------------------------------- helpers


def _wilson(p: float, n: int, level: float) -> tuple[float, float]:
    z = float(sps.norm.ppf(0.5 + level / 2))
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _agresti_min(b: int, c: int, n: int, level: float) -> tuple[float, float]:
    z = float(sps.norm.ppf(0.5 + level / 2))
    b_, c_, n_ = b + 0.5, c + 0.5, n + 2.0
    diff = (c_ - b_) / n_
    se = math.sqrt(max((b_ + c_) - (c_ - b_) ** 2 / n_, 0.0)) / n_
    return max(-1.0, diff - z * se), min(1.0, diff + z * se)


def _hierarchical_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Mean of d over resampled seeds x resampled images, for each resample, via resample counts: the mean
    over a resample is w_seeds . (d @ w_images) / (seeds * images), which avoids building the resampled arrays.

    Images are resampled jointly over seeds (they are the same test images). Correctness differences take
    few values, so the images fall into few distinct columns (at most 3^seeds patterns): drawing how often
    each pattern is picked (a multinomial with the patterns' frequencies) has exactly the distribution of
    drawing images and costs per pattern, not per image."""
    n_seeds, n_images = d.shape
    patterns, freq = np.unique(d.T, axis=0, return_counts=True)  # (K, n_seeds), (K,)
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_CELLS // n_images)
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        seed_counts = _counts(rng.integers(0, n_seeds, size=(m, n_seeds)), n_seeds)
        if len(freq) * 4 <= n_images:
            pattern_counts = rng.multinomial(n_images, freq / n_images, size=m).astype(np.float64)
            per_seed = pattern_counts @ patterns  # (m, n_seeds): each seed's sum over the resampled images
        else:
            image_counts = _counts(rng.integers(0, n_images, size=(m, n_images)), n_images)
            per_seed = image_counts @ d.T
        out[start:start + m] = np.einsum("ms,ms->m", seed_counts, per_seed) / (n_seeds * n_images)
    return out


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """Row-wise counts of each index 0..size-1 in `draws` (m, k), as floats for a matrix product."""
    m = draws.shape[0]
    flat = (draws + (np.arange(m) * size)[:, None]).ravel()
    return np.bincount(flat, minlength=m * size).reshape(m, size).astype(np.float64)


def _seed_interval(values: np.ndarray, level: float, method: str, n_resamples: int, seed: int) -> Interval:
    if method == "t":
        return t_interval(values, level)
    if method == "bootstrap":
        return bootstrap_interval(values, level, n_resamples, seed)
    raise DeepPatchError(f"unknown interval method {method!r}; valid choices: bootstrap, t")


def _as_correct(correct: ArrayLike, name: str) -> np.ndarray:
    """Per-sample correctness as a (n_seeds, n_images) boolean array; 0/1 numbers are accepted."""
    a = np.asarray(correct)
    if a.ndim not in (1, 2):
        raise DeepPatchError(f"{name}: need shape (n_images,) or (n_seeds, n_images); got {a.shape}")
    if a.size == 0:
        raise DeepPatchError(f"{name}: empty correctness array (shape {a.shape})")
    if a.dtype != np.bool_:
        if not np.issubdtype(a.dtype, np.number):
            raise DeepPatchError(f"{name}: correctness must be booleans; got dtype {a.dtype}")
        bad = a[(a != 0) & (a != 1)]
        if bad.size:
            raise DeepPatchError(f"{name}: correctness must be booleans or 0/1; got value {bad.flat[0].item()!r}")
        a = a != 0
    return a.reshape(1, -1) if a.ndim == 1 else a


def _paired_arrays(reference: ArrayLike, candidate: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both correctness arrays as (n_seeds, n_images) on the same images; a one-row side is repeated."""
    ref = _as_correct(reference, "reference")
    cand = _as_correct(candidate, "candidate")
    if ref.shape[1] != cand.shape[1]:
        raise DeepPatchError(f"reference and candidate must cover the same images; got {ref.shape[1]} and "
                             f"{cand.shape[1]} images")
    if ref.shape[0] != cand.shape[0]:
        if ref.shape[0] == 1:
            ref = np.broadcast_to(ref, cand.shape)
        elif cand.shape[0] == 1:
            cand = np.broadcast_to(cand, ref.shape)
        else:
            raise DeepPatchError(f"reference and candidate differ in seeds: {ref.shape[0]} vs {cand.shape[0]}")
    return ref, cand


def _as_values(values: ArrayLike, name: str, min_len: int) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1:
        raise DeepPatchError(f"{name}: need a 1-D sequence of numbers; got shape {x.shape}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise DeepPatchError(f"{name}: need numbers; got dtype {x.dtype}")
    if x.size < min_len:
        what = "empty" if x.size == 0 else f"only {x.size} value"
        raise DeepPatchError(f"{name}: need at least {min_len} values; got {what}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DeepPatchError(f"{name}: values must be finite; got {float(x[~np.isfinite(x)][0])!r}")
    return x


def _significant(p: Any, alpha: float) -> Any:
    return p <= alpha


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise DeepPatchError(f"alpha must lie in (0, 1); got {alpha!r}")
    return float(alpha)


def _check_level(level: float) -> float:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise DeepPatchError(f"confidence level must lie in (0, 1); got {level!r}")
    return float(level)


def _check_resamples(n_resamples: int) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise DeepPatchError(f"n_resamples must be a positive integer; got {n_resamples!r}")


def _level_text(level: float) -> str:
    return f"{level * 100:g} %"

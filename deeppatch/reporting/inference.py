"""The report's uses of `stats`: one interval per number, a paired test per change, a test per best mark.

Nothing statistical is computed here: this module picks the right function of `deeppatch.reporting.stats`
for what a table cell holds (how many seeds, whether per-sample correctness is stored) and lines the
per-sample arrays up by seed.

- An accuracy (or another share of the test images) on several seeds: the mean and a Student t interval
  across seeds; on one seed (or the same value on every seed, where the t interval would be a point): a
  Wilson interval on the n test images. Other numbers (AUROC, costs) get the
  t interval across seeds when there are several, else none.
- A change against the model under maintenance: `stats.paired_test` on the same images (McNemar for one
  seed, the paired bootstrap over seeds and images for several); without per-sample data only the t
  interval of the per-seed changes (several seeds) and no test.
- The best of a column: `stats.compare_best` of the best against the runner-up, on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deeppatch.errors import DeepPatchError
from deeppatch.reporting import stats

PERCENT = 100.0  # the rows store accuracies in percent
LEVEL = 0.95
ALPHA = 0.05
N_RESAMPLES = 10_000  # paired bootstrap (several seeds): p-values down to 2 / 10 001, enough for Holm over ~250
T_METHOD = "t"
WILSON_METHOD = "wilson"


@dataclass(frozen=True)
class Spread:
    """An interval [low, high] and the method that gave it ("t", "wilson", or a paired test's name)."""

    low: float
    high: float
    method: str


def value_interval(values: Sequence[float], images: float | None, proportion: bool) -> Spread | None:
    """t across seeds (two or more values), else Wilson on `images` for a share in percent, else None."""
    vals = [float(v) for v in values if math.isfinite(float(v))]
    wilson_ok = proportion and images is not None and math.isfinite(images) and images >= 1
    try:
        if len(vals) >= 2 and not (wilson_ok and max(vals) == min(vals)):
            iv = stats.t_interval(vals, LEVEL)
            return Spread(iv.low, iv.high, T_METHOD)
        if vals and wilson_ok:  # one seed, or every seed the same value (the t interval would be a point)
            vals = vals[:1]
            est = stats.summarize_seeds(vals, n_images=int(images), scale=PERCENT, level=LEVEL)
            return Spread(est.interval.low, est.interval.high, WILSON_METHOD)
    except DeepPatchError:
        return None
    return None


def seed_arrays(by_seed: Mapping[int, np.ndarray | None]) -> tuple[list[int], np.ndarray] | None:
    """(seeds, (n_seeds, n_images) array) when every seed has an array of one common length, else None."""
    if not by_seed or any(a is None for a in by_seed.values()):
        return None
    seeds = sorted(by_seed)
    sizes = {by_seed[s].size for s in seeds}
    if len(sizes) != 1:
        return None
    return seeds, np.stack([np.asarray(by_seed[s], dtype=bool) for s in seeds])


def change_test(candidate: Mapping[int, np.ndarray | None],
                reference: Mapping[int, np.ndarray | None]) -> stats.PairedTest | None:
    """The paired test of candidate minus reference on the same images, seeds lined up (None: not possible).

    The reference's rows follow the candidate's seeds; a reference evaluated on one seed only is compared
    with every seed of the candidate (`stats.paired_bootstrap` repeats it).
    """
    cand = seed_arrays(candidate)
    ref = seed_arrays(reference)
    if cand is None or ref is None or cand[1].shape[1] != ref[1].shape[1]:
        return None
    cand_seeds, cand_arr = cand
    ref_seeds, ref_arr = ref
    if set(cand_seeds) <= set(ref_seeds):
        ref_arr = ref_arr[[ref_seeds.index(s) for s in cand_seeds]]
    elif len(ref_seeds) != 1:
        return None
    try:
        return stats.paired_test(ref_arr, cand_arr, LEVEL, N_RESAMPLES)
    except DeepPatchError:
        return None


def best_test(candidates: Sequence[Mapping[int, np.ndarray | None]], better: str
              ) -> tuple[int, stats.PairedTest] | None:
    """(index of the best, its paired test against the runner-up) on the seeds all candidates share."""
    if len(candidates) < 2:
        return None
    lined = [seed_arrays(c) for c in candidates]
    if any(x is None for x in lined):
        return None
    common = sorted(set.intersection(*(set(seeds) for seeds, _ in lined)))
    sizes = {arr.shape[1] for _, arr in lined}
    if not common or len(sizes) != 1:
        return None
    arrays = [arr[[seeds.index(s) for s in common]] for seeds, arr in lined]
    try:
        best, _, test = stats.compare_best(arrays, better=better, n_resamples=N_RESAMPLES, level=LEVEL)
    except DeepPatchError:
        return None
    ahead = test.diff > 0 if better == stats.HIGHER else test.diff < 0
    return (best, test) if ahead else None


def holm_adjusted(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(Holm-adjusted p-values, significant at ALPHA) for one table's family of comparisons."""
    if not p_values:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return stats.holm(p_values), stats.holm_significant(p_values, ALPHA)


def p_text(p_value: float | None, tested: bool) -> str:
    """"n.s.", "p < 0.01", ... for a (Holm-adjusted) p-value; "n/a" when no test was possible."""
    if not tested or p_value is None or not math.isfinite(p_value):
        return "n/a"
    return stats.format_p(float(p_value), ALPHA)

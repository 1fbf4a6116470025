"""Intervals for the claims: a bootstrap over replicates, stratified by unit (dataset × paradigm).

A claim about an average is judged on the mean paired effect over its units, with a percentile
interval from resampling each unit's replicates with replacement, every unit on its own (the
practice of Agarwal et al., NeurIPS 2021, "Deep RL at the edge of the statistical precipice":
the units are fixed, only the replicates are random). With a few replicates per unit a plain
bootstrap understates the spread (its variance of a mean is (n − 1)/n of the unbiased one), so
each unit's resampled replicates are spread about their mean by √(n/(n − 1)) (a variance-corrected
bootstrap). One unit's own interval (a forest plot's row) is Student's t interval of its mean: with
three replicates a bootstrap of one unit is little more than their minimum and maximum. Every
statistic here is a function of per-unit arrays whose first axis is the replicate, so one routine
serves paired means, relative gains, the range of a sweep and recall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0  # the bootstrap's own seed: the same records give the same interval


def stratified_bootstrap(strata: Sequence[np.ndarray], per_unit: Callable[[np.ndarray], np.ndarray],
                         combine: Callable[[np.ndarray], np.ndarray] = lambda x: x.mean(-1),
                         confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED
                         ) -> tuple[float, float, float, np.ndarray]:
    """(estimate, low, high, per-unit estimates) of ``combine`` over units of ``per_unit``.

    ``strata``: one array per unit, replicates along axis 0 (further axes, e.g. swept values, kept).
    ``per_unit(x)`` maps an array of shape (B, n, ...) of B resampled replicate sets to (B,);
    ``combine`` maps (B, units) to (B,). The estimate is the statistic of the data as they are; the
    interval is the central ``confidence`` share of the resampled statistics (percentile method)."""
    strata = [np.asarray(s, dtype=float) for s in strata]
    if not strata or any(len(s) == 0 for s in strata):
        raise ValueError("every unit needs at least one replicate")
    rng = np.random.default_rng(seed)
    own = np.array([per_unit(s[None])[0] for s in strata])
    resampled = np.stack([per_unit(_corrected(s, rng.integers(0, len(s), size=(resamples, len(s))))) for s in strata],
                         axis=-1)
    stats = combine(resampled)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(combine(own[None])[0]), float(low), float(high), own


def _corrected(stratum: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The replicates drawn by ``index`` (B, n), spread about the unit's mean by √(n/(n − 1))."""
    n = len(stratum)
    if n < 2:
        return stratum[index]
    centre = stratum.mean(axis=0)
    return centre + np.sqrt(n / (n - 1)) * (stratum[index] - centre)


def mean_of_replicates(x: np.ndarray) -> np.ndarray:
    """(B, n) → (B,): the mean over replicates."""
    return x.mean(axis=1)


def sweep_range(x: np.ndarray) -> np.ndarray:
    """(B, n, values) → (B,): the largest minus the smallest mean over replicates of the swept values."""
    means = x.mean(axis=1)
    return means.max(axis=-1) - means.min(axis=-1)


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of ``values`` (a point with one value)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def unit_intervals(strata: Sequence[np.ndarray], per_unit=mean_of_replicates, confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = SEED) -> list[tuple[float, float, float]]:
    """(estimate, low, high) of each unit on its own, the rows of a forest plot: Student's t interval
    for a mean, the variance-corrected bootstrap for another statistic (a sweep's range)."""
    if per_unit is mean_of_replicates:
        return [t_interval(s, confidence) for s in strata]
    return [stratified_bootstrap([s], per_unit, confidence=confidence, resamples=resamples, seed=seed)[:3]
            for s in strata]


def probability_of_improvement(effects: Sequence[float]) -> float:
    """The chance that, in a unit drawn at random, the claim's ``better`` side has the higher mean:
    the share of units with a positive mean effect, a tie counting one half."""
    effects = np.asarray(effects, dtype=float)
    if not len(effects):
        return float("nan")
    return float(((effects > 0) + 0.5 * (effects == 0)).mean())

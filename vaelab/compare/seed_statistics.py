"""How sure a comparison over seeds is: the statistics `vaelab compare` gives each cell.

A cell is the runs of one objective at one setting of its knobs, differing only by seed; a
figure (MIG, say) over its n seeds is a small sample x_1..x_n. Everything random here draws
from a generator with a fixed seed, so the same runs always give the same numbers.

- :func:`summarize`: n, the mean x̄ and the sample standard deviation s (divisor n - 1), the
  median and the quartiles (numpy's default: linear interpolation between order statistics),
  and a percentile-bootstrap 95% interval of the mean.
- Bootstrap (Efron): draw B resamples of n values with replacement, take each one's mean; the
  2.5th and 97.5th percentiles of those B means are the interval. B = BOOTSTRAP_RESAMPLES from
  ``numpy.random.default_rng(BOOTSTRAP_SEED)``: the indices are ``rng.integers(0, n, (B, n))``.
  With few seeds the interval is narrower than the truth (it cannot see values no seed gave).
- :func:`contrast` of cells A and B: the difference of means d = x̄_B - x̄_A, its bootstrap 95%
  interval (A's B resamples drawn first, then B's, from one generator as above; the interval
  of the B differences of their means), and a two-sided permutation test of "the seeds' values
  do not depend on the cell": p = the share of splits of the pooled n_A + n_B values into
  groups of n_A and n_B whose |difference of means| is at least the observed |d|. Every split
  is enumerated when there are at most EXACT_SPLITS_LIMIT of them (the observed split among
  them, so p >= 1/C(n_A + n_B, n_A)); otherwise PERMUTATIONS random ones, seeded, give
  p = (1 + count) / (1 + PERMUTATIONS) (Phipson & Smyth 2010: never 0).
- :func:`paired_contrast` of cells A and B run on the same seeds (a seed fixes the initial
  weights and the data order, so two runs of one seed share part of their luck): the per-seed
  differences d_s = b_s - a_s, their mean, its bootstrap 95% interval (resampling the seeds,
  i.e. the d_s) and a two-sided sign-flip test of "the cell does not matter", under which each
  d_s is as likely to have been -d_s: p = the share of the 2^n sign patterns whose |mean| is at
  least the observed one, every pattern enumerated up to EXACT_SPLITS_LIMIT of them, otherwise
  PERMUTATIONS random ones, seeded, as above. Where the seed moves both cells alike, the d_s
  vary less than the cells' values do and the interval is narrower than the unpaired one.
- :func:`fraction_at_or_above`: how many seeds reach a threshold.

Means are exact sums (``math.fsum``), so two cells with the same values in any order have a
difference of exactly 0, and then p = 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
EXACT_SPLITS_LIMIT = 100_000  # C(19, 9) = 92,378: up to 9 against 10 seeds every split is tried; 2^16 sign patterns
PERMUTATIONS = 10_000
PERMUTATION_SEED = 0
LEVEL = 0.95


def exact_mean(values: Sequence[float]) -> float:
    """The mean from a correctly rounded sum: independent of the values' order."""
    return math.fsum(values) / len(values)


def bootstrap_means(values: Sequence[float], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The means of ``resamples`` resamples of ``values`` with replacement (indices
    ``rng.integers(0, n, (resamples, n))``)."""
    sample = np.asarray(values, dtype=float)
    return sample[rng.integers(0, len(sample), size=(resamples, len(sample)))].mean(axis=1)


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of ``draws`` (numpy's linear-interpolation percentiles)."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_interval(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:  # fmt: skip
    """Percentile-bootstrap 95% interval of the mean of ``values``."""
    return percentile_interval(bootstrap_means(values, resamples, np.random.default_rng(seed)))


@dataclass(frozen=True)
class Summary:
    """One figure over the seeds of one cell."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one seed
    median: float
    q1: float
    q3: float
    interval: tuple[float, float] | None  # bootstrap 95% interval of the mean; None for one seed


def summarize(values: Sequence[float]) -> Summary:
    """n, mean ± std, median and quartiles, and the bootstrap interval of the mean of ``values`` (n >= 1)."""
    sample = np.asarray(values, dtype=float)
    mean = exact_mean(values)
    std = math.sqrt(math.fsum((sample - mean) ** 2) / (len(sample) - 1)) if len(sample) > 1 else 0.0
    q1, median, q3 = (float(q) for q in np.percentile(sample, [25, 50, 75]))
    interval = bootstrap_mean_interval(values) if len(sample) > 1 else None
    return Summary(len(sample), mean, std, median, q1, q3, interval)


def fraction_at_or_above(values: Sequence[float], threshold: float) -> tuple[int, int]:
    """(seeds with a value >= ``threshold``, seeds)."""
    return sum(value >= threshold for value in values), len(values)


@dataclass(frozen=True)
class Permutation:
    """A two-sided permutation test of a difference of means."""

    p: float
    splits: int  # the splits (sign patterns, paired) enumerated, or the random ones drawn
    exact: bool  # every split enumerated
    paired: bool = False  # a sign-flip test of per-seed differences


def permutation_test(a: Sequence[float], b: Sequence[float], exact_limit: int = EXACT_SPLITS_LIMIT,
                     permutations: int = PERMUTATIONS, seed: int = PERMUTATION_SEED) -> Permutation:  # fmt: skip
    """Two-sided permutation test of mean(b) - mean(a) (module docstring)."""
    pooled = np.asarray([*a, *b], dtype=float)
    n_a, n = len(a), len(pooled)
    observed = abs(exact_mean(b) - exact_mean(a))
    # Splits with the same difference as the observed one must count although their sums are
    # rounded in another order: a tolerance far below any real difference between splits.
    tolerance = 1e-9 * max(float(np.abs(pooled).max()), 1e-300)
    total = math.comb(n, n_a)
    if total <= exact_limit:
        in_a = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), n_a)), dtype=np.intp)
        sums_a = pooled[in_a.reshape(total, n_a)].sum(axis=1)
        differences = (pooled.sum() - sums_a) / (n - n_a) - sums_a / n_a
        count = int(np.count_nonzero(np.abs(differences) >= observed - tolerance))
        return Permutation(count / total, total, exact=True)
    rng = np.random.default_rng(seed)
    order = rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1)
    shuffled = pooled[order]
    differences = shuffled[:, n_a:].mean(axis=1) - shuffled[:, :n_a].mean(axis=1)
    count = int(np.count_nonzero(np.abs(differences) >= observed - tolerance))
    return Permutation((1 + count) / (1 + permutations), permutations, exact=False)


def sign_flip_test(differences: Sequence[float], exact_limit: int = EXACT_SPLITS_LIMIT,
                   permutations: int = PERMUTATIONS, seed: int = PERMUTATION_SEED) -> Permutation:  # fmt: skip
    """Two-sided sign-flip test of mean(differences) = 0 (module docstring)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    observed = abs(exact_mean(differences))
    tolerance = 1e-9 * max(float(np.abs(d).max()), 1e-300)  # as permutation_test's
    total = 2**n
    if total <= exact_limit:
        # Row i flips the seeds whose bit is set in i: every pattern once.
        signs = 1 - 2 * ((np.arange(total)[:, None] >> np.arange(n)) & 1)
        means = (signs * d).sum(axis=1) / n
        count = int(np.count_nonzero(np.abs(means) >= observed - tolerance))
        return Permutation(count / total, total, exact=True, paired=True)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, n))
    count = int(np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - tolerance))
    return Permutation((1 + count) / (1 + permutations), permutations, exact=False, paired=True)


@dataclass(frozen=True)
class Contrast:
    """Cell B against cell A on one figure."""

    difference: float  # mean(b) - mean(a)
    interval: tuple[float, float]  # bootstrap 95% interval of the difference
    test: Permutation
    n_a: int
    n_b: int  # paired: both are the seeds the two cells share


def contrast(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
             seed: int = BOOTSTRAP_SEED) -> Contrast:  # fmt: skip
    """mean(b) - mean(a) with its bootstrap 95% interval and permutation p-value (module docstring)."""
    rng = np.random.default_rng(seed)
    means_a = bootstrap_means(a, resamples, rng)
    means_b = bootstrap_means(b, resamples, rng)
    difference = exact_mean(b) - exact_mean(a)
    return Contrast(difference, percentile_interval(means_b - means_a), permutation_test(a, b), len(a), len(b))


def paired_contrast(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> Contrast:  # fmt: skip
    """The mean of b_s - a_s over seeds s (``a[i]`` and ``b[i]`` from one seed), with its bootstrap
    95% interval and sign-flip p-value (module docstring)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_contrast: {len(a)} and {len(b)} values; one pair per seed is needed")
    differences = [y - x for x, y in zip(a, b)]
    means = bootstrap_means(differences, resamples, np.random.default_rng(seed))
    return Contrast(exact_mean(differences), percentile_interval(means), sign_flip_test(differences), len(a), len(b))

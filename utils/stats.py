"""Uncertainty of the report's accuracy drops: paired bootstrap intervals over the evaluation images.

Two rows of a report are measured on the same images, so their top-1 difference is a paired quantity: only the
discordant images (one row right, the other wrong) move it. Resampling images with replacement is then the same as
drawing the counts of the two discordant kinds from a multinomial, which is what :func:`paired_drop_interval` does
(exactly the image bootstrap, in microseconds instead of seconds).
"""
from __future__ import annotations

import numpy as np

#: resamples and seed of every interval in a report: the same rows always give the same interval
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0
METHOD = (f"paired bootstrap over evaluation images ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}), "
          "95 % percentile interval")


def paired_drop_interval(base_correct: np.ndarray, row_correct: np.ndarray, confidence: float = 0.95,
                         resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """The ``confidence`` interval, in percentage points, of top-1(base) - top-1(row) on the same images.

    Discordant counts b (base right, row wrong) and c (base wrong, row right) of n images; each resample draws
    (b*, c*, rest) from Multinomial(n, (b/n, c/n, 1 - (b+c)/n)) and the drop is 100 (b* - c*) / n. With no discordant
    image the interval is [0, 0]: the rows agree on every image, and the set's size bounds what that can show
    (see :func:`resolution_pp`)."""
    base = np.asarray(base_correct, dtype=bool)
    row = np.asarray(row_correct, dtype=bool)
    if base.shape != row.shape:
        raise ValueError(f"paired rows must cover the same images ({base.shape} vs {row.shape})")
    n = base.size
    if n == 0:
        return None
    b = int(np.count_nonzero(base & ~row))
    c = int(np.count_nonzero(~base & row))
    draws = np.random.default_rng(seed).multinomial(n, [b / n, c / n, 1.0 - (b + c) / n], size=resamples)
    drops = 100.0 * (draws[:, 0] - draws[:, 1]) / n
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(drops, [tail, 100.0 - tail])
    return [float(low), float(high)]


def resolution_pp(images: int) -> float:
    """What one image is worth in percentage points of top-1."""
    return 100.0 / images if images else float("inf")


def resolves_budget(images: int, interval: list[float] | None, budget_pp: float) -> bool:
    """Whether a set of ``images`` can tell a drop inside ``budget_pp`` from one outside it: one image must be worth
    at most a fifth of the budget, and the drop's interval must be narrower than the budget."""
    if resolution_pp(images) > budget_pp / 5.0:
        return False
    return interval is None or (interval[1] - interval[0]) <= budget_pp

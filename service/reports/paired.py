"""Paired statistics for comparing variants that share replicates (seed, split).

Variants of one experiment are trained on the same seeds and splits, so a variant and its
reference form pairs. Per pair the difference d = metric(variant) - metric(reference); reported:
``n`` pairs, mean difference, its 95% confidence interval (Student t on the differences),
the paired t-test and the Wilcoxon signed-rank p-values (two-sided, scipy.stats), the effect
size d_z = mean(d) / sd(d), Holm-adjusted p-values across the variants compared to one
reference, and a plain verdict.

Verdict rule: a difference is *distinguishable* when the Holm-adjusted Wilcoxon p-value is
below ``alpha`` (0.05); otherwise "not distinguishable". Wilcoxon is the primary test because
accuracies on small test sets are discrete and far from normal; the t-test and its CI are shown
beside it. With n pairs the smallest two-sided Wilcoxon p is 2 / 2^n (``min_p``), so fewer than
6 pairs can never be distinguishable at 0.05; the row says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class PairedResult:
    """One variant against its reference on one metric."""

    n: int
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_t: float | None
    p_wilcoxon: float | None
    effect_size: float | None  # d_z = mean(d) / sd(d, ddof=1)
    min_p: float | None        # smallest attainable two-sided Wilcoxon p with n pairs
    p_holm: float | None = None
    distinguishable: bool = False

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "too few pairs"
        return "distinguishable" if self.distinguishable else "not distinguishable"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def paired_test(values: Sequence[float], reference: Sequence[float], *, confidence: float = 0.95) -> PairedResult:
    """Paired comparison of ``values`` against ``reference`` (equal length, pair i = index i).
    Pairs with a non-finite member are dropped."""
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = int(d.size)
    if n == 0:
        return PairedResult(0, None, None, None, None, None, None, None)
    mean = float(d.mean())
    if n < 2:
        return PairedResult(n, mean, None, None, None, None, None, None)
    sd = float(d.std(ddof=1))
    min_p = min(1.0, 2.0 / 2 ** n)
    if sd == 0.0:  # every pair differs by the same amount (often: identical results)
        if mean == 0.0:
            return PairedResult(n, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, min_p)
        # t is undefined without spread; every pair has the same sign: the exact Wilcoxon p is min_p
        return PairedResult(n, mean, mean, mean, None, min_p, math.copysign(math.inf, mean), min_p)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    p_t = float(stats.ttest_rel(a[keep], b[keep]).pvalue)
    if np.all(d == 0):
        p_w = 1.0
    else:
        p_w = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedResult(n, mean, mean - half, mean + half, p_t, p_w, mean / sd, min_p)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (family-wise error) of ``pvalues``; ``None`` stays ``None``.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def with_holm(results: dict[str, PairedResult], *, alpha: float = ALPHA) -> dict[str, PairedResult]:
    """Holm-adjust the Wilcoxon p-values of several variants compared to one reference and set
    each one's ``distinguishable`` flag."""
    names = list(results)
    adjusted = holm([results[k].p_wilcoxon for k in names])
    out = {}
    for k, p in zip(names, adjusted):
        r = results[k]
        out[k] = PairedResult(**{**asdict(r), "p_holm": p,
                                 "distinguishable": p is not None and p < alpha})
    return out


def pair_values(trials: Iterable[dict[str, Any]], variant: str, reference: str, metric: str,
                key: tuple[str, ...] = ("seed", "split")) -> tuple[list[float], list[float], list[tuple]]:
    """Align two variants' completed trials on ``key`` (default: seed and split) and return the
    paired metric values and the keys they share. Trials without a partner are left out."""
    by: dict[str, dict[tuple, float]] = {variant: {}, reference: {}}
    for t in trials:
        if t.get("variant") in by and t.get("status", "completed") == "completed":
            v = t.get(metric)
            if v is not None:
                by[t["variant"]][tuple(t.get(k) for k in key)] = float(v)
    shared = sorted(set(by[variant]) & set(by[reference]), key=lambda k: tuple(str(x) for x in k))
    return [by[variant][k] for k in shared], [by[reference][k] for k in shared], shared


def default_references(variants: Iterable[dict[str, Any]]) -> dict[str, str]:
    """variant -> reference: the first unregularized variant of the same family (GRU for L1-GRU,
    L2-GRU and SL1-GRU). Unregularized variants and families without one have no reference."""
    variants = list(variants)
    plain = {}
    for v in variants:
        if v.get("reg", "none") == "none":
            plain.setdefault(v["family"], v["name"])
    return {v["name"]: plain[v["family"]] for v in variants
            if v.get("reg", "none") != "none" and v["family"] in plain}


def paired_comparisons(trials: list[dict[str, Any]], references: dict[str, str], metric: str, *,
                       alpha: float = ALPHA) -> dict[str, PairedResult]:
    """variant -> its paired result against ``references[variant]`` on ``metric``, Holm-adjusted
    within each reference's family of comparisons."""
    out: dict[str, PairedResult] = {}
    for ref in dict.fromkeys(references.values()):
        group = {}
        for variant, r in references.items():
            if r != ref:
                continue
            a, b, _ = pair_values(trials, variant, ref, metric)
            group[variant] = paired_test(a, b)
        out.update(with_holm(group, alpha=alpha))
    return out

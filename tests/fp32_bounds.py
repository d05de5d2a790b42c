"""How far a probe statistic may lie from its float64 value: bounds from fp32 rounding-error
analysis, so a test holds on any CPU whatever order its vector units add in.

The probe adds a tensor's elements up in fp32 (partial sums, per channel or whole) before its
formulas run in float64. Which order the additions take depends on the backend, the SIMD width
and the library build: an AMD EPYC host and an Intel Xeon host add the same tensor in different
orders, so a fixed relative tolerance that one host meets the other may not (1e-5 did not, at
N ~ 1e5 elements: ``tests/test_fp32_bounds.py`` shows a plain left-to-right fp32 sum missing it).

The bound used here does not depend on the order. For a sum of n terms computed in fp32 with
unit roundoff u = 2^-24, probabilistic rounding-error analysis (Higham & Mary, "A new approach
to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019, Thm 2.4) gives

    |computed - exact| <= gamma(n) * sum |x_i|,  gamma(n) = exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1

with probability at least 1 - 2n exp(-lam^2 (1-u)^2 / 2) for any summation order, rounding
errors modelled as independent and mean-zero; lam = 10 makes a false failure rarer than 1e-19
per sum for the tensors tested here. (The worst-case bound n u / (1 - n u) holds without the
model but is ~sqrt(n) times looser: too loose to catch a 0.1% error in a large tensor.) One more
u covers storing the sum as fp32.

Each statistic of ``probes.stats`` then gets its absolute bound from the sums it uses:
``tolerance(stat, tensor)``; the derivations are written beside each.
"""
from __future__ import annotations

import math

import torch

U = 2.0 ** -24              # fp32 unit roundoff
LAMBDA = 10.0               # how many standard deviations of the rounding model


def gamma(n: int) -> float:
    """Relative bound (to the sum of magnitudes) on an fp32 sum of ``n`` terms, any order,
    plus its storage as fp32."""
    return math.expm1(LAMBDA * math.sqrt(n) * U + n * U * U / (1 - U)) + U


def tolerance(stat: str, t: torch.Tensor) -> float:
    """Absolute bound on |probe - float64| for ``stat`` of tensor ``t`` (N elements in C channels
    of M = N / C each: the probe sums each channel's M elements, s1c, and all N squares, sum_sq)."""
    t = t.detach().double()
    n = t.numel()
    c = t.shape[1] if t.dim() > 1 else 1
    g_n, g_m = gamma(n), gamma(n // c)
    sq = t.square().mean().item()                      # rms^2
    rms = math.sqrt(sq)
    if stat.startswith("frac"):                        # exact integer counts: under one element
        return 0.5 / n
    if stat == "norm":                                 # sqrt(S): dS <= g S, so d sqrt(S) <= g sqrt(S) / 2
        return g_n * math.sqrt(sq * n)
    if stat == "rms":
        return g_n * rms
    if stat == "mean":                                 # sum over channels of s1c / N: each s1c within g_m sum|t|
        return g_m * t.abs().mean().item()
    if stat == "ch_sq_mean":                           # d(m_c^2) <= (2 + g) g_m (mean|t|_c)^2 <= 3 g_m rms_c^2
        return 3 * g_m * sq
    if stat == "ch_var":                               # sum_sq / N (g_n rms^2) minus ch_sq_mean
        return (g_n + 3 * g_m) * sq
    if stat == "std":                                  # var = S/N - mean^2 within (g_n + 2 g_m) rms^2;
        dvar = (g_n + 2 * g_m) * sq                    # |sqrt(a) - sqrt(b)| <= min(|a-b| / sqrt(b), sqrt|a-b|)
        std = t.std(unbiased=False).item()
        return min(dvar / std, math.sqrt(dvar)) if std > 0 else math.sqrt(dvar)
    # A weight layer's input, per channel c: m_c = s1c / M, v_c = s2c / M - m_c^2 (s2c: M squares).
    if stat == "in_mean_mean":
        return g_m * t.abs().mean().item()
    if stat == "in_mean_var":                          # mean m_c^2 (3 g_m rms^2) - (mean m_c)^2 (2 g_m rms^2)
        return 5 * g_m * sq
    if stat == "in_var_mean":                          # s2c / M (g_m rms^2) minus m_c^2 (3 g_m rms^2)
        return 4 * g_m * sq
    if stat == "in_var_var":                           # d(v_c^2) <= 2 v_c 4 g_m rms_c^2 <= 8 g_m rms_c^4, twice
        per_channel = t.transpose(0, 1).reshape(c, -1).square().mean(1)
        return 16 * g_m * per_channel.square().mean().item()
    raise ValueError(f"no fp32 bound for statistic {stat!r}")


def ratio_tolerance(n: int) -> float:
    """Absolute bound on a share A / B of two fp32 sums of ``n`` nonnegative terms with A <= B
    (the cuts: shortcut_cut, grad_cut): d(A/B) <= (g A + (A/B) g B) / B <= 2 g."""
    return 2 * gamma(n)


def norm_tolerance(norm: float, n: int) -> float:
    """Absolute bound on the root of an fp32 sum of ``n`` squares whose root is ``norm``."""
    return gamma(n) * norm

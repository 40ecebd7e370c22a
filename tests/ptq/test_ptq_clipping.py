"""The clipping methods of `adjust_ranges` against brute-force numpy references, through
`oxiquant._native.clip_from_values(values, method, nb_bits, signed)`, which returns
(clip, hist_abs, hist_pos, range) for one batch of values.

Conventions (the documented contract, not read off the code): 2048 bins over [0, range];
hist_abs is the histogram of |x|, hist_pos of max(x, 0); a signed tensor is clipped from the
statistics of |x|, an unsigned one from those of max(x, 0), with L = 2^(n-1) - 1 or 2^n - 1
positive levels; exact zeros sit in bin 0 but the MSE and KL searches leave them out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import oxiquant
from oxiquant import _native

BINS = 2048
MSE_CANDIDATES = 400


def levels(bits: int, signed: bool) -> int:
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def magnitudes(x: np.ndarray, signed: bool) -> np.ndarray:
    """What the statistics of a signed (|x|) or unsigned (max(x, 0)) tensor are taken of."""
    return np.abs(x) if signed else np.maximum(x, 0)


def clip_of(x: np.ndarray, method: str, bits: int, signed: bool) -> tuple[float, np.ndarray, float]:
    """oxiquant's clip, the histogram its search used (zeros removed), and the range."""
    c, hist_abs, hist_pos, rng = _native.clip_from_values(x.astype(np.float32).tolist(), method, bits, signed)
    hist = np.array(hist_abs if signed else hist_pos, dtype=np.int64)
    hist[0] -= int(np.count_nonzero(magnitudes(x, signed) == 0))
    assert hist[0] >= 0
    return float(c), hist, float(rng)


def bin_centres(rng: float) -> np.ndarray:
    return (np.arange(BINS) + 0.5) * (rng / BINS)


# -- distributions ---------------------------------------------------------------------
def distributions() -> dict[str, np.ndarray]:
    g = np.random.default_rng(2024)
    n = 20_000
    normal = g.standard_normal(n)
    return {
        "normal": normal,
        "uniform": g.uniform(-3, 2, n),
        "laplace": g.laplace(0, 1, n),
        "normal_with_outliers": np.concatenate([normal, [40.0, -55.0, 80.0]]),
        "exponential": g.exponential(2.0, n),
        "relu_of_normal": np.maximum(normal, 0),  # half the values are exact zeros
        "bimodal": np.concatenate([g.normal(-4, 0.5, n // 2), g.normal(3, 0.3, n // 2)]),
        "negative_heavy": -g.exponential(1.0, n) + 0.1 * g.standard_normal(n),
        "tiny_scale": 1e-6 * g.standard_normal(n),
        "few_values": np.tile([0.5, -1.0, 2.0, 0.0], 500),
    }


DISTS = distributions()
DIST_IDS = sorted(DISTS)


# -- histograms ------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIST_IDS)
def test_histograms_match_numpy_binning(name):
    x = DISTS[name].astype(np.float32)
    _, hist_abs, hist_pos, rng = _native.clip_from_values(x.tolist(), "max", 8, True)
    a = np.abs(x)
    # The range is the smallest power of two >= max|x| (so that it does not depend on how
    # the calibration set is split into batches).
    assert rng >= float(a.max()) and rng / 2 < float(a.max())
    assert np.log2(rng) == np.round(np.log2(rng))
    # Bin of v: floor(v * (2048 / range)) in f32, the top edge in the last bin.
    scale = np.float32(BINS) / np.float32(rng)
    for hist, v in ((hist_abs, a), (hist_pos, np.maximum(x, np.float32(0)))):
        idx = np.minimum((v * scale).astype(np.int64), BINS - 1)
        np.testing.assert_array_equal(np.array(hist), np.bincount(idx, minlength=BINS))
        assert sum(hist) == len(x)


# -- MAX -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIST_IDS)
@pytest.mark.parametrize("signed", [True, False])
def test_max_is_the_largest_magnitude(name, signed):
    x = DISTS[name].astype(np.float32)
    c, _, _ = clip_of(x, "max", 8, signed)
    assert c == float(magnitudes(x, signed).max())


def test_max_of_an_unsigned_negative_tensor_is_zero():
    x = -np.linspace(0.1, 2.0, 100).astype(np.float32)
    assert clip_of(x, "max", 8, False)[0] == 0.0
    assert clip_of(x, "max", 8, True)[0] == pytest.approx(2.0)


# -- SIGMA -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIST_IDS)
@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("signed", [True, False])
def test_sigma_is_mean_plus_k_std_capped_at_max(name, k, signed):
    x = DISTS[name].astype(np.float32)
    m = magnitudes(x, signed).astype(np.float64)
    want = min(m.mean() + k * m.std(), m.max())
    c, _, _ = clip_of(x, f"sigma{k}", 8, signed)
    assert c == pytest.approx(want, rel=1e-5)


def test_sigma_cuts_outliers_but_not_a_bell():
    x = DISTS["normal_with_outliers"].astype(np.float32)
    c, _, _ = clip_of(x, "sigma3", 8, True)
    assert 2.0 < c < 5.0  # |N(0,1)|: mean 0.8, std 0.6 (the 3 outliers move them a little)
    u = DISTS["uniform"].astype(np.float32)
    assert clip_of(u, "sigma5", 8, True)[0] == pytest.approx(float(np.abs(u).max()))


# -- MSE -------------------------------------------------------------------------------
def mse_errors(hist: np.ndarray, rng: float, candidates: np.ndarray, L: int) -> np.ndarray:
    """Squared error of quantize-dequantize of the histogram's samples (each bin's centre,
    as many times as its count) for every clipping candidate: q(x) = min(round(x/step), L) * step.
    One row per candidate; the samples of one bin are equal, so each bin is weighted by its
    count instead of being repeated."""
    nz = hist > 0
    x, counts = bin_centres(rng)[nz], hist[nz].astype(np.float64)
    step = (candidates / L)[:, None]
    q = np.clip(np.round(x[None, :] / step), 0, L) * step
    return ((x[None, :] - q) ** 2 * counts[None, :]).sum(axis=1)


@pytest.mark.parametrize("name", DIST_IDS)
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_mse_picks_the_argmin_of_the_quantization_error(name, bits, signed):
    x = DISTS[name].astype(np.float32)
    c, hist, rng = clip_of(x, "mse", bits, signed)
    peak = float(magnitudes(x, signed).max())
    if peak == 0:
        assert c == 0
        return
    L = levels(bits, signed)
    candidates = peak * np.arange(1, MSE_CANDIDATES + 1) / MSE_CANDIDATES
    err = mse_errors(hist, rng, candidates, L)
    # oxiquant's choice is one of the candidates...
    j = int(np.argmin(np.abs(candidates - c)))
    assert c == pytest.approx(candidates[j], rel=1e-5), f"clip {c} is not a candidate"
    # ... and the best one: ties (and the rounding of bin centres exactly half-way between
    # two levels) may move it by one candidate, never to a worse error.
    best = int(np.argmin(err))
    assert err[j] <= err.min() * (1 + 1e-6) + 1e-12 or abs(j - best) <= 1, (
        f"mse chose candidate {j + 1} (error {err[j]:.6g}), the minimum is candidate {best + 1} ({err[best]:.6g})"
    )


def test_mse_clips_a_lone_outlier_and_not_a_uniform_distribution():
    x = DISTS["normal_with_outliers"].astype(np.float32)
    c4, _, _ = clip_of(x, "mse", 4, True)
    assert 1.0 < c4 < 10.0
    u = np.random.default_rng(5).uniform(-1, 1, 20_000).astype(np.float32)
    c8, _, _ = clip_of(u, "mse", 8, True)
    assert c8 > 0.95 * np.abs(u).max()


def test_mse_clip_grows_with_the_bit_width():
    # Fewer levels favour a tighter range on a long-tailed distribution.
    x = DISTS["laplace"].astype(np.float32)
    clips = [clip_of(x, "mse", b, True)[0] for b in (2, 4, 8)]
    assert clips[0] < clips[1] < clips[2] <= float(np.abs(x).max())


def test_mse_ignores_exact_zeros():
    # A Relu output: the zeros are exact at any clip, so the search must not give them
    # weight as if they sat at bin 0's centre; adding more zeros changes nothing.
    g = np.random.default_rng(9)
    pos = g.exponential(1.0, 5_000).astype(np.float32)
    few = np.concatenate([pos, np.zeros(100, np.float32)])
    many = np.concatenate([pos, np.zeros(50_000, np.float32)])
    for bits in (2, 4, 8):
        assert clip_of(few, "mse", bits, False)[0] == clip_of(many, "mse", bits, False)[0]
        assert clip_of(few, "mse", bits, True)[0] == clip_of(many, "mse", bits, True)[0]


# -- KL (TensorRT entropy calibration) -------------------------------------------------
def kl_reference(hist: np.ndarray, nq: int, last: int) -> dict[int, float]:
    """KL(P || Q) for every threshold i in nq..last: P is bins 0..i-1 with the outliers
    (bins i..) added to the last kept bin; Q quantizes bins 0..i-1 into nq levels (level j
    covers bins floor(j*i/nq) .. floor((j+1)*i/nq) - 1) and spreads each level's count evenly
    over the bins of the level where P is not 0."""
    h = hist.astype(np.float64)
    out = {}
    for i in range(nq, last + 1):
        p = h[:i].copy()
        p[i - 1] += h[i:].sum()
        starts = (np.arange(nq) * i) // nq  # strictly increasing since i >= nq
        sizes = np.diff(np.append(starts, i))
        totals = np.add.reduceat(h[:i], starts)
        nonzero = np.add.reduceat((p > 0).astype(np.float64), starts)
        per_bin = np.divide(totals, nonzero, out=np.zeros(nq), where=nonzero > 0)
        q = np.where(p > 0, np.repeat(per_bin, sizes), 0.0)
        pn = p / p.sum()
        qn = np.maximum(q / q.sum(), 1e-12) if q.sum() > 0 else np.full(i, 1e-12)
        mask = pn > 0
        out[i] = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
    return out


@pytest.mark.parametrize(
    ("name", "bits", "signed"),
    [
        ("normal", 8, True),
        ("normal", 4, False),
        ("laplace", 6, True),
        ("normal_with_outliers", 8, True),
        ("exponential", 4, False),
        ("relu_of_normal", 8, False),
        ("relu_of_normal", 4, True),
        ("bimodal", 6, True),
    ],
)
def test_kl_picks_the_threshold_of_least_divergence(name, bits, signed):
    x = DISTS[name].astype(np.float32)
    c, hist, rng = clip_of(x, "kl", bits, signed)
    peak = float(magnitudes(x, signed).max())
    w = rng / BINS
    nq = levels(bits, signed) + 1
    last = int(np.clip(np.ceil(peak / w), 1, BINS))
    if last <= nq:
        assert c == peak
        return
    kl = kl_reference(hist, nq, last)
    i_ox = last if c >= peak else round(c / w)
    assert i_ox in kl, f"clip {c} is not at a bin edge in {nq}..{last}"
    assert c == pytest.approx(min(i_ox * w, peak), rel=1e-5)
    best = min(kl.values())
    assert kl[i_ox] <= best * (1 + 1e-6) + 1e-12, (
        f"kl chose {i_ox} bins (KL {kl[i_ox]:.6g}); the least divergence is {best:.6g} at {min(kl, key=kl.get)} bins"
    )


def test_kl_clips_outliers():
    x = DISTS["normal_with_outliers"].astype(np.float32)
    c, _, _ = clip_of(x, "kl", 8, True)
    assert c < 0.5 * np.abs(x).max()


# -- percentile ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIST_IDS)
@pytest.mark.parametrize("signed", [True, False])
def test_percentile_is_the_bin_edge_of_the_99_999th_percentile(name, signed):
    """The upper edge of the first bin whose cumulative count (zeros included) reaches 99.999 %
    of the values: within one bin above the order statistic at that rank."""
    x = DISTS[name].astype(np.float32)
    c, hist_abs, hist_pos, rng = _native.clip_from_values(x.tolist(), "percentile", 8, signed)
    hist = np.array(hist_abs if signed else hist_pos, dtype=np.int64)
    peak = float(magnitudes(x, signed).max())
    if peak == 0:
        assert c == 0.0
        return
    cum = np.cumsum(hist)
    first = int(np.argmax(cum >= cum[-1] * 99.999 / 100))
    assert c == pytest.approx(min((first + 1) * rng / BINS, peak), rel=1e-6)
    m = np.sort(magnitudes(x, signed).astype(np.float64))
    rank = math.ceil(len(m) * 99.999 / 100) - 1
    assert m[rank] - 1e-6 <= c <= min(m[rank] + rng / BINS, peak) + 1e-6


# -- degenerate inputs and argument checks -----------------------------------------------
@pytest.mark.parametrize("method", ["max", "mse", "kl", "sigma3", "sigma4", "sigma5", "percentile"])
@pytest.mark.parametrize("signed", [True, False])
def test_constant_and_zero_tensors(method, signed):
    zeros = np.zeros(1000, np.float32)
    assert clip_of(zeros, method, 8, signed)[0] == 0.0
    const = np.full(1000, 0.75, np.float32)
    c, _, _ = clip_of(const, method, 8, signed)
    assert np.isfinite(c) and 0 < c <= 0.75
    if method in ("max", "sigma3", "sigma4", "sigma5"):
        assert c == pytest.approx(0.75)


@pytest.mark.parametrize("method", ["max", "mse", "kl", "sigma3", "percentile"])
def test_clip_is_never_above_the_max(method):
    for name in DIST_IDS:
        x = DISTS[name].astype(np.float32)
        for signed in (True, False):
            c, _, _ = clip_of(x, method, 4, signed)
            peak = float(magnitudes(x, signed).max())
            assert 0 <= c <= peak, (name, signed, c, peak)


def test_clip_from_values_rejects_bad_arguments():
    x = [0.0, 1.0, -2.0]
    with pytest.raises(oxiquant.InvalidArgumentError, match="clipping"):
        _native.clip_from_values(x, "median", 8, True)
    with pytest.raises(oxiquant.InvalidArgumentError, match="nb_bits"):
        _native.clip_from_values(x, "max", 1, True)
    with pytest.raises(oxiquant.InvalidArgumentError, match="NaN|infinite"):
        _native.clip_from_values([0.0, float("nan")], "max", 8, True)
    with pytest.raises(oxiquant.InvalidArgumentError, match="NaN|infinite"):
        _native.clip_from_values([float("inf")], "mse", 8, True)

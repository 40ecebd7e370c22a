"""Automatic weight bit allocation: spend an average weight-bit budget where each layer's
sensitivity says it matters.

Sensitivity of a layer: the output noise (mean squared error against the float model, over a
few calibration samples) when that layer alone has its weights rounded to `low` bits
(symmetric, max-abs scale, per channel or per tensor) and everything else stays in float.
Allocation: every layer starts at `low`; one bit at a time goes to the layer whose estimated
noise drops most per weight bit spent (noise assumed to fall 4x per bit, as the rounding step
halves), as long as the weight-count-weighted average stays within the budget and the layer is
below `high`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from oxiquant._errors import InvalidArgumentError
from oxiquant.model import Model


def _fake_quantize(w: np.ndarray, bits: int, axis: int | None) -> np.ndarray:
    """Symmetric rounding of `w` to `bits` (max-abs scale per slice along `axis`, or one)."""
    levels = 2 ** (bits - 1) - 1
    if axis is None:
        m = np.abs(w).max()
    else:
        m = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    step = np.where(m > 0, m / levels, 1.0)
    return (np.clip(np.round(w / step), -levels, levels) * step).astype(w.dtype)


def _channel_axis(node: onnx.NodeProto, per_channel: bool) -> int | None:
    if not per_channel:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return 0 if trans_b else 1
    return None  # MatMul keeps one scale


def layer_sensitivity(
    prepared: Model,
    samples: np.ndarray | Mapping[str, np.ndarray],
    low: int,
    per_channel: bool = True,
    layers: Iterable[str] | None = None,
) -> dict[str, tuple[int, float]]:
    """{layer: (weight count, output MSE with that layer alone at `low` bits)} for every
    Conv/Gemm/MatMul of a model after `prepare_network` (or those in `layers`)."""
    wanted = None if layers is None else set(layers)
    from oxiquant.model import load

    proto = prepared.to_onnx()
    inits = {t.name: t for t in proto.graph.initializer}
    feeds = dict(samples) if isinstance(samples, Mapping) else samples
    out_name = prepared.output_names[0]
    ref = prepared.run(feeds)[out_name].astype(np.float64)
    result: dict[str, tuple[int, float]] = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if wanted is not None and node.name not in wanted:
            continue
        t = inits[node.input[1]]
        w = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(_fake_quantize(w, low, _channel_axis(node, per_channel)), t.name))
        got = load(proto).run(feeds)[out_name]
        t.CopyFrom(numpy_helper.from_array(w, t.name))
        result[node.name] = (int(w.size), float(np.mean((got - ref) ** 2)))
    return result


def allocate_bits(
    sensitivity: Mapping[str, tuple[int, float]],
    budget: float,
    low: int,
    high: int,
    fixed: Mapping[str, int] | None = None,
    what: str = "weight_bits_budget",
) -> dict[str, int]:
    """Greedy allocation (module docstring): {layer: bits}, the average over weights within
    `budget`. Layers in `fixed` keep their width (and count in the average)."""
    fixed = {k: v for k, v in (fixed or {}).items() if k in sensitivity}
    bits = {name: fixed.get(name, low) for name in sensitivity}
    total = sum(n for n, _ in sensitivity.values())
    spent = sum(sensitivity[name][0] * b for name, b in bits.items())
    allowed = budget * total
    if spent > allowed + 1e-9:
        raise InvalidArgumentError(
            f"{what} {budget} is below the {spent / max(total, 1):.2f} bits the lowest width "
            f"{low} and the fixed layer widths already take"
        )
    while True:
        best, gain = None, 0.0
        for name, (n, noise) in sensitivity.items():
            if name in fixed or bits[name] >= high or spent + n > allowed + 1e-9:
                continue
            now = noise * 4.0 ** (low - bits[name])
            g = (now - now / 4) / max(n, 1)
            if best is None or g > gain:
                best, gain = name, g
        if best is None:
            return bits
        bits[best] += 1
        spent += sensitivity[best][0]


def check_budget(budget: Any, low: int, high: int, what: str = "weight_bits_budget") -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating, np.integer)):
        raise InvalidArgumentError(f"{what} must be a number of bits, got {budget!r}")
    if not low <= float(budget) <= high:
        raise InvalidArgumentError(f"{what} must be between {low} and {high} bits, got {budget}")
    return float(budget)


def group_elements(calibrated: Model, groups: Iterable[list[str]]) -> dict[str, int]:
    """{group's first quantizer: activation elements its quantizers saw over the calibration
    set}."""
    info = {a["name"]: a for a in calibrated.quant_info["activations"]}
    return {g[0]: sum(int((info[a].get("stats") or {}).get("count", 0)) for a in g) for g in groups}


def activation_sensitivity(
    calibrated: Model,
    reference: np.ndarray,
    samples: np.ndarray | Mapping[str, np.ndarray],
    low: int,
    high: int,
    clipping: str,
    optimize_signs: bool,
    fixed: Iterable[str] = (),
    on_group: Any = None,
) -> dict[str, tuple[list[str], int, float]]:
    """{group: (its quantizers, element count, sensitivity)} for every group of quantizers
    that share a width (`Model` after `compute_ranges`; the inputs of one Add or Concat form
    one group), but those with a member in `fixed` (quantizer names). The sensitivity is how
    much the first output's mean squared error against `reference` (the float model's on
    `samples`) grows when that group alone goes to `low` bits, every other activation and
    every weight being at `high`; the element count is the group's share of the activations
    (summed over the calibration set), which the budget averages over."""
    fixed = set(fixed)
    out_name = calibrated.output_names[0]
    ref = reference.astype(np.float64)

    def error(widths: dict[str, int]) -> float:
        from oxiquant.ptq import adjust_ranges, normalize_activations, quantize_normalized_network

        c = calibrated.copy()
        adjust_ranges(c, clipping=clipping, nb_bits=high, optimize_signs=optimize_signs, activation_bits=widths)
        normalize_activations(c)
        quantize_normalized_network(c, high, optimize_signs=optimize_signs)
        return float(np.mean((c.run(samples)[out_name].astype(np.float64) - ref) ** 2))

    base = error({})
    groups = calibrated._native.ptq_activation_groups()
    elements = group_elements(calibrated, groups)
    result: dict[str, tuple[list[str], int, float]] = {}
    for group in groups:
        if fixed.isdisjoint(group):
            result[group[0]] = (group, elements[group[0]], max(error(dict.fromkeys(group, low)) - base, 0.0))
        if on_group is not None:
            on_group(1)
    return result

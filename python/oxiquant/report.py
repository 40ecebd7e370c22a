"""The per-layer report: for every quantizer of a quantized model, its range, clipping value,
scale, bit width and sign, and how much signal survives (SQNR) on a few samples.

    report = oxiquant.layer_report(model, qmodel, samples)   # plain data, JSON-ready
    print(oxiquant.format_report(report))                    # a table for the terminal
    oxiquant.report.write_plots(report, "plots/")             # PNGs (needs matplotlib)

The keys are documented in docs/report.md and kept stable (`report["version"]` changes if they
ever do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from oxiquant._errors import InvalidArgumentError
from oxiquant.model import Model

REPORT_VERSION = 1
HISTOGRAM_BINS = 64

Samples = Union[np.ndarray, Mapping[str, np.ndarray]]


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> tuple[Optional[float], bool]:
    """(SQNR in dB, exact). None when there is no error (exact) or no signal."""
    ref = ref.astype(np.float64)
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return None, True
    if signal == 0.0:
        return None, False
    return 10.0 * math.log10(signal / noise), False


def _quantize(x: np.ndarray, step: float, bits: int, signed: bool) -> np.ndarray:
    """What a quantizer with this step, width and sign does to real values (round half to
    even, two's complement range for signed), back in real units."""
    if signed:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    return np.clip(np.round(x.astype(np.float64) / step), lo, hi) * step


def _scaling_values(qmodel: Model) -> list[tuple[str, str, str]]:
    """(Scaling node, value it reads, value it writes) in topological order, as the core
    holds them (`quantizers()`; the fake ONNX export writes the same names)."""
    return [(q["name"], q["reads"], q["writes"]) for q in qmodel._native.quantizers()]


def layer_report(
    float_model: Model,
    qmodel: Model,
    samples: Samples,
    *,
    num_threads: Optional[int] = None,
    histogram_bins: int = HISTOGRAM_BINS,
) -> dict[str, Any]:
    """Per-layer report of `qmodel` (a result of `quantize_network`) against `float_model`
    (the model it was quantized from), on `samples` (an input array [N, ...] or a dict of
    them; a few calibration samples are enough).

    For every quantizer: its settings from `qmodel.quant_info`, and
    - `sqnr_db`: float activation vs the quantized network's activation at the same place
      (dequantized with `step`): the error accumulated up to and including this quantizer;
    - `local_sqnr_db`: the float activation vs the same activation quantized by this
      quantizer alone (clipping and rounding of this layer only);
    - `clipped_fraction`: the share of values beyond the clipping value (in magnitude);
    - `histogram`: the float activation's histogram (for the plots).
    Unsigned quantizers are compared with max(x, 0) (a tensor is made unsigned only where it
    is provably non-negative or read only by Relu-like nodes). See docs/report.md."""
    if not isinstance(qmodel, Model) or not qmodel.is_quantized:
        raise InvalidArgumentError("layer_report needs a quantized model (a result of oxiquant.quantize_network)")
    if not isinstance(float_model, Model) or float_model.is_quantized:
        raise InvalidArgumentError("layer_report needs the float model qmodel was quantized from as float_model")
    from oxiquant.ptq import prepare_network

    info = qmodel.quant_info
    if info.get("no_quant"):
        raise InvalidArgumentError("layer_report: the model was quantized with no_quant=True, nothing to report")
    ref = float_model.copy()
    prepare_network(ref)  # same function, and the value names the quantized graph keeps
    ref_names = set(ref._native.value_names())
    by_name = {a["name"]: a for a in info["activations"]}
    # Quantizers only (a dequantizer in front of a float island has no step: nothing to report).
    scalings = _scaling_values(qmodel)
    places = [p for p in scalings if p[0] in by_name and by_name[p[0]]["step"]]

    # The float value each quantizer stands for: what it reads, when the float graph has that
    # value (inputs, branches) or when it is another Scaling node's output (then that node's
    # float value); otherwise the value it writes, whose name it took over (after an affine or
    # merging node).
    float_of: dict[str, Optional[str]] = {}
    float_of_value: dict[str, Optional[str]] = {}
    for name, src, dst in scalings:  # every Scaling node, in graph order
        if src in float_of_value:
            f = float_of_value[src]
        else:
            cands = [src, by_name[name]["tensor"] if name in by_name else None, dst]
            f = next((c for c in cands if c in ref_names), None)
        float_of_value[dst] = f
        float_of[name] = f
    want_f = sorted({v for v in float_of.values() if v is not None} | set(ref.output_names))
    want_q = sorted({dst for _, _, dst in places})
    fvals = ref.run(samples, num_threads=num_threads, fetch=want_f)
    # The fake-quantized graph: it keeps every quantizer's output (the integer engine fuses
    # some away) and computes the same integers.
    mode = "fake" if qmodel.engine != "float" else None
    qvals = qmodel.run(samples, num_threads=num_threads, fetch=want_q, mode=mode)
    n_samples = len(next(iter(fvals.values()))) if fvals else 0

    layers = []
    for name, _src, dst in places:
        a = by_name[name]
        entry: dict[str, Any] = {
            "name": name,
            "role": a["role"],
            "tensor": dst,
            "float_tensor": float_of[name],
            "bits": a["bits"],
            "signed": a["signed"],
            "clipping": a["clipping"],
            "range": a["range"],
            "clip": a["clip"],
            "min": a["min"],
            "max": a["max"],
            "scale": a["scale"],
            "step": a["step"],
            "codes": a.get("codes"),
            "sqnr_db": None,
            "local_sqnr_db": None,
            "exact": None,
            "clipped_fraction": None,
            "histogram": None,
        }
        fname = float_of[name]
        if fname is not None and a["step"]:
            x = fvals[fname].astype(np.float64)
            if not a["signed"]:
                x = np.maximum(x, 0.0)
            got = qvals[dst].astype(np.float64) * a["step"]
            entry["sqnr_db"], entry["exact"] = _sqnr_db(x, got)
            entry["local_sqnr_db"], _ = _sqnr_db(x, _quantize(x, a["step"], a["bits"], a["signed"]))
            # Beyond the grid's reach (a merge's inputs share its scale, which may exceed their
            # own clip; a relative margin: the step is an f32 from a rescaled range).
            lo_code, hi_code = a.get("codes") or (-(2 ** (a["bits"] - 1)), 2 ** (a["bits"] - 1) - 1)
            reach_lo, reach_hi = lo_code * a["step"] * (1 + 1e-6), hi_code * a["step"] * (1 + 1e-6)
            entry["clipped_fraction"] = float(np.mean((x > reach_hi) | (x < reach_lo)))
            top = max(float(np.max(np.abs(x))) if x.size else 0.0, float(a["range"] or 0.0), 1e-12)
            lo = 0.0 if not a["signed"] else -top
            counts, _ = np.histogram(x, bins=histogram_bins, range=(lo, top))
            entry["histogram"] = {"lo": lo, "hi": top, "counts": [int(c) for c in counts]}
        layers.append(entry)

    outputs = {}
    if info.get("dequantized_outputs"):
        qout = qmodel.run(samples, num_threads=num_threads)
        for o in ref.output_names:
            if o in qout and o in fvals:
                outputs[o], _ = _sqnr_db(fvals[o], qout[o])
    scored = [layer for layer in layers if layer["sqnr_db"] is not None]
    worst = min(scored, key=lambda layer: layer["sqnr_db"])["name"] if scored else None
    return {
        "version": REPORT_VERSION,
        "samples": n_samples,
        "settings": {
            "bits": sorted({layer["bits"] for layer in layers if layer["bits"] is not None}),
            "per_channel": info.get("per_channel"),
            "clipping": sorted({layer["clipping"] for layer in layers if layer["clipping"]}),
        },
        "layers": layers,
        "outputs": [{"name": k, "sqnr_db": v} for k, v in outputs.items()],
        "worst_layer": worst,
        "float_nodes": [{"node": n, "op": op, "reason": why} for n, op, why in info.get("float_nodes", [])],
        # Layers whose output stays float: only float ops read it, so a dequantizer takes
        # their integer accumulator to real values instead of an 8-bit requantizer.
        "float_outputs": [
            a["name"].removesuffix("_to_float")
            for a in info.get("activations", [])
            if a["role"] == "dequant" and a["name"].endswith("_to_float")
        ],
        "warnings": list(info.get("warnings", [])),
        # What the optional passes did: per layer, equalization's smallest/largest channel
        # range before and after; the bit allocation's widths and sensitivities.
        # and outlier channel splitting's values.
        "passes": {
            "equalization": info.get("equalization"),
            "bit_allocation": info.get("bit_allocation"),
            "activation_bit_allocation": info.get("activation_bit_allocation"),
            "split_channels": info.get("split_channels"),
        },
        "plots": [],
    }


def activation_allocation_line(alloc: Mapping[str, Any]) -> str:
    """One line on what `activation_bits_budget` chose: quantizer groups per width, the
    average over the activation elements it allocated, the most sensitive group."""
    total = sum(v["elements"] for v in alloc.values())
    mean = sum(v["elements"] * v["bits"] for v in alloc.values()) / max(total, 1)
    counts = {b: sum(1 for v in alloc.values() if v["bits"] == b) for b in sorted({v["bits"] for v in alloc.values()})}
    top = max(alloc, key=lambda k: alloc[k]["sensitivity"])
    return (
        "activation bits by sensitivity: "
        + ", ".join(f"{b} bits x {n} quantizer groups" for b, n in counts.items())
        + f"; {mean:.2f} bits on average over their activations; most sensitive: {top}"
    )


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a terminal table, one row per quantizer in graph order."""
    rows = [("layer", "role", "bits", "sign", "range", "clip", "scale", "clipped", "SQNR dB", "local dB")]
    for r in report["layers"]:
        clipped = None if r["clipped_fraction"] is None else f"{r['clipped_fraction'] * 100:.2f}%"
        rows.append(
            (
                r["name"],
                r["role"],
                _fmt(r["bits"], "d"),
                "-" if r["signed"] is None else ("s" if r["signed"] else "u"),
                _fmt(r["range"], ".4g"),
                _fmt(r["clip"], ".4g"),
                _fmt(r["scale"], ".4g"),
                clipped or "-",
                "exact" if r["exact"] else _fmt(r["sqnr_db"], ".1f"),
                _fmt(r["local_sqnr_db"], ".1f"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    tail = [f"{len(report['layers'])} quantizers, SQNR on {report['samples']} samples"]
    if report.get("worst_layer"):
        tail.append(f"lowest SQNR: {report['worst_layer']}")
    for o in report.get("outputs", []):
        tail.append(f"output {o['name']}: {_fmt(o['sqnr_db'], '.1f')} dB")
    lines.append("; ".join(tail))
    passes = report.get("passes") or {}
    eq = passes.get("equalization")
    if eq:
        ratios = np.array(list(eq["layers"].values()), dtype=np.float64).reshape(-1, 2)
        med = np.median(ratios, axis=0) if len(ratios) else (float("nan"), float("nan"))
        lines.append(
            f"cross-layer equalization: {eq['groups']} channel groups, {eq['pinned_channels']} channels pinned, "
            f"{eq['sweeps']} sweeps; weight channel range smallest/largest, median over layers: "
            f"{med[0]:.3g} -> {med[1]:.3g}"
        )
    alloc = passes.get("bit_allocation")
    if alloc:
        total = sum(v["weights"] for v in alloc.values())
        mean = sum(v["weights"] * v["bits"] for v in alloc.values()) / max(total, 1)
        widths = sorted({v["bits"] for v in alloc.values()})
        counts = {b: sum(1 for v in alloc.values() if v["bits"] == b) for b in widths}
        top = max(alloc, key=lambda k: alloc[k]["sensitivity"])
        lines.append(
            "weight bits by sensitivity: "
            + ", ".join(f"{b} bits x {n} layers" for b, n in counts.items())
            + f"; {mean:.2f} bits on average over the weights; most sensitive: {top}"
        )
    act_alloc = passes.get("activation_bit_allocation")
    if act_alloc:
        lines.append(activation_allocation_line(act_alloc))
    split = passes.get("split_channels")
    for method, verb in (("split", "split"), ("smooth", "smoothed into the weights")):
        done = {k: v for k, v in (split or {}).items() if v.get("method", "split") == method}
        if not done:
            continue
        added = sum(v["added"] for v in done.values())
        worst = max(done, key=lambda k: done[k]["ratio_before"])
        extra = f", {added} channels added" if method == "split" else ""
        lines.append(
            f"outlier channels {verb}: {len(done)} values{extra}; largest/median channel range "
            f"{done[worst]['ratio_before']:.3g} -> {done[worst]['ratio_after']:.3g} ({worst})"
        )
    if report.get("float_outputs"):
        lines.append("output kept in float (only float ops read it): " + ", ".join(report["float_outputs"]))
    for f in report.get("float_nodes", []):
        lines.append(f"kept in float: {f['node']} ({f['op']}): {f['reason']}")
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


# -- plots -------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InvalidArgumentError(
            "plots need matplotlib: pip install 'oxiquant[plots]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_figure(report: Mapping[str, Any]):
    """A grid of panels, one per quantizer with a histogram: the float activation's histogram
    (log counts) with the clipping value marked (red) and the calibration range (grey)."""
    plt = _pyplot()
    layers = [r for r in report["layers"] if r["histogram"] is not None]
    if not layers:
        raise InvalidArgumentError("the report has no activation histograms to plot")
    cols = min(4, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), layers):
        h = r["histogram"]
        counts = np.asarray(h["counts"])
        edges = np.linspace(h["lo"], h["hi"], len(counts) + 1)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", log=True)
        if r["range"] is not None:
            for x in (r["range"], -r["range"]) if r["signed"] else (r["range"],):
                ax.axvline(x, color="0.5", linestyle="--", linewidth=1)
        if r["clip"] is not None:
            for x in (r["clip"], -r["clip"]) if r["signed"] else (r["clip"],):
                ax.axvline(x, color="#d62728", linewidth=1.5)
        sq = "exact" if r["exact"] else (f"{r['sqnr_db']:.1f} dB" if r["sqnr_db"] is not None else "-")
        ax.set_title(f"{r['name']}\n{r['bits']}-bit {'s' if r['signed'] else 'u'}, {r['clipping']}, {sq}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(layers) :]:
        ax.remove()
    fig.suptitle("float activations (log count); red: clipping value, grey dashed: calibration range", fontsize=9)
    fig.tight_layout()
    return fig


def sqnr_figure(report: Mapping[str, Any]):
    """Horizontal bars: per-quantizer SQNR (accumulated, and this layer's own), graph order."""
    plt = _pyplot()
    layers = [r for r in report["layers"] if r["sqnr_db"] is not None or r["exact"]]
    if not layers:
        raise InvalidArgumentError("the report has no SQNR values to plot")
    names = [r["name"] for r in layers]
    acc = [r["sqnr_db"] if r["sqnr_db"] is not None else 0.0 for r in layers]
    loc = [r["local_sqnr_db"] if r["local_sqnr_db"] is not None else 0.0 for r in layers]
    y = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1.4))
    ax.barh(y - 0.2, acc, height=0.4, color="#4c72b0", label="network up to here")
    ax.barh(y + 0.2, loc, height=0.4, color="#dd8452", label="this quantizer alone")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB), higher is better")
    hi = max([*acc, *loc, 1.0])
    ax.set_xlim(min([*acc, *loc, 0.0]), hi * 1.35)  # room for the legend right of the bars
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"per-layer SQNR on {report['samples']} samples", fontsize=10)
    fig.tight_layout()
    return fig


def write_plots(report: dict[str, Any], directory: Union[str, Path]) -> list[Path]:
    """Writes histograms.png and sqnr.png into `directory` (created if needed); records them
    and their panel counts in `report["plots"]`; returns the paths."""
    plt = _pyplot()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    entries = []
    for fname, build in (("histograms.png", histogram_figure), ("sqnr.png", sqnr_figure)):
        fig = build(report)
        path = d / fname
        fig.savefig(path, dpi=110)
        entries.append({"file": str(path), "panels": len(fig.axes)})
        plt.close(fig)
        written.append(path)
    report["plots"] = entries
    return written

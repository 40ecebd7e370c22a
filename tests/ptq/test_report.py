"""The per-layer report: its SQNR figures against an independent computation (onnxruntime on
the float model and on the quantized model's 'fake' export, with the values exposed as
outputs), its JSON keys, and the plots (valid PNGs, one panel per quantizer)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from onnx import helper

import oxiquant
from oxiquant import examples
from oxiquant.report import histogram_figure, sqnr_figure, write_plots

import ptq_graphs
import reference

LAYER_KEYS = {
    "name", "role", "tensor", "float_tensor", "bits", "signed", "clipping", "range", "clip", "min", "max",
    "scale", "step", "codes", "sqnr_db", "local_sqnr_db", "exact", "clipped_fraction", "histogram",
}  # fmt: skip
TOP_KEYS = {
    "version", "samples", "settings", "layers", "outputs", "worst_layer", "float_nodes", "float_outputs", "warnings",
    "plots", "passes",
}


# Past this SQNR the quantization noise is at the level of the float disagreement between
# oxiquant's engine and onnxruntime (relative RMS 1e-5 = 100 dB).
SQNR_FLOOR_DB = 100.0
# Relative band around a clip value inside which the two engines' floats may fall apart.
CLIP_RTOL = 1e-4


def expose(proto: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    known = {o.name for o in m.graph.output}
    for n in names:
        if n not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def check_against_onnxruntime(float_model: oxiquant.Model, q: oxiquant.Model, x: np.ndarray) -> dict:
    report = oxiquant.layer_report(float_model, q, x)
    assert set(report) == TOP_KEYS and report["samples"] == len(x)
    # The reference: the float graph after prepare_network (BatchNorm folded: same function,
    # the names the quantized graph keeps) and the quantized graph as written to ONNX.
    prepared = float_model.copy()
    oxiquant.prepare_network(prepared)
    fproto, qproto = prepared.to_onnx(), q.to_onnx("fake")
    layers = report["layers"]
    fsess = expose(fproto, [r["float_tensor"] for r in layers])
    qsess = expose(qproto, [r["tensor"] for r in layers])
    feed = {fproto.graph.input[0].name: x}
    fvals = dict(zip([o.name for o in fsess.get_outputs()], fsess.run(None, feed)))
    qvals = dict(zip([o.name for o in qsess.get_outputs()], qsess.run(None, feed)))
    quantizers = [a for a in q.quant_info["activations"] if a["step"]]
    assert sorted(r["name"] for r in layers) == sorted(a["name"] for a in quantizers)
    for r in layers:
        assert set(r) == LAYER_KEYS
        ints = qvals[r["tensor"]].astype(np.float64)
        assert np.array_equal(ints, np.round(ints)), f"{r['tensor']} should hold integers"
        lo, hi = (-(2 ** (r["bits"] - 1)), 2 ** (r["bits"] - 1) - 1) if r["signed"] else (0, 2 ** r["bits"] - 1)
        assert ints.min() >= lo and ints.max() <= hi
        ref = fvals[r["float_tensor"]].astype(np.float64)
        if not r["signed"]:
            ref = np.maximum(ref, 0)
        noise = np.sum((ints * r["step"] - ref) ** 2)
        if noise == 0:
            assert r["exact"] and r["sqnr_db"] is None
        elif np.sum(ref**2) > 0:
            want = 10 * math.log10(np.sum(ref**2) / noise)
            if want > SQNR_FLOOR_DB:
                # Quantization noise below the two float engines' own disagreement (random
                # networks with 1e-8..1e4 weights differ by ~1e-5 relative): only "exact
                # enough" is comparable.
                assert r["sqnr_db"] is None or r["sqnr_db"] > SQNR_FLOOR_DB - 10, r["name"]
            else:
                assert r["sqnr_db"] == pytest.approx(want, abs=0.05), r["name"]
        # Beyond the grid's reach, codes times step (values within the engines' disagreement of
        # the edge may land on either side).
        lo, hi = r["codes"][0] * r["step"], r["codes"][1] * r["step"]
        low, high = (float(np.mean((ref > hi * k) | (ref < lo * k))) for k in (1 + CLIP_RTOL, 1 - CLIP_RTOL))
        assert low - 1e-9 <= r["clipped_fraction"] <= high + 1e-9, r["name"]
        assert sum(r["histogram"]["counts"]) == ref.size
    return report


def test_report_on_the_bundled_example_matches_onnxruntime_and_numpy():
    d = examples.digits_data()
    model = oxiquant.load(examples.DIGITS_MODEL)
    x = d["calib_images"][:16]
    r8 = check_against_onnxruntime(
        model, oxiquant.quantize_network(model, 8, d["calib_images"], per_channel=True, progress=False), x
    )
    r4 = check_against_onnxruntime(
        model,
        oxiquant.quantize_network(model, 4, d["calib_images"], clipping="mse", optimize_signs=True, progress=False),
        x,
    )
    # Every layer has an SQNR, and 4 bits lose more signal than 8 (about 6 dB a bit).
    s8 = {r["name"]: r["sqnr_db"] for r in r8["layers"]}
    s4 = {r["name"]: r["sqnr_db"] for r in r4["layers"]}
    assert set(s8) == set(s4) and all(s8[k] > s4[k] + 10 for k in s8)
    roles = {r["role"] for r in r8["layers"]}
    assert {"input", "affine", "branch", "merge"} <= roles
    json.dumps(r8, allow_nan=False)  # plain, strict JSON


@settings(max_examples=reference.examples(8))
@given(ptq_graphs.networks(max_blocks=3))
def test_report_on_generated_networks_matches_onnxruntime(proto):
    model = oxiquant.load(proto)
    rng = np.random.default_rng(0)
    calib = ptq_graphs.calibration_data(proto, rng, n=8)
    q = oxiquant.quantize_network(model, 6, calib, progress=False, optimize_signs=True)
    check_against_onnxruntime(model, q, calib[:4])


def test_report_keeps_float_islands_out_and_lists_them():
    proto = ptq_graphs.small_cnn(middle="Sigmoid")
    model = oxiquant.load(proto)
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    q = oxiquant.quantize_network(model, 8, x, progress=False)
    report = check_against_onnxruntime(model, q, x)
    # The reason is the core's (a Sigmoid is not scale-invariant), passed on unchanged.
    ((node, op, why),) = q.quant_info["float_nodes"]
    assert (node, op) == ("middle", "Sigmoid") and "not scale-invariant" in why
    assert report["float_nodes"] == [{"node": "middle", "op": "Sigmoid", "reason": why}]
    text = oxiquant.format_report(report)
    assert "kept in float: middle (Sigmoid)" in text
    assert all(r["name"] in text for r in report["layers"])


def test_report_refuses_a_float_model():
    model = oxiquant.load(ptq_graphs.small_cnn())
    with pytest.raises(oxiquant.InvalidArgumentError, match="quantized model"):
        oxiquant.layer_report(model, model, np.zeros((1, 3, 8, 8), np.float32))


def test_plots_are_pngs_with_one_panel_per_quantizer(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    d = examples.digits_data()
    model = oxiquant.load(examples.DIGITS_MODEL)
    q = oxiquant.quantize_network(model, 4, d["calib_images"], clipping="mse", progress=False)
    report = oxiquant.layer_report(model, q, d["calib_images"][:8])
    n_quantizers = sum(1 for a in q.quant_info["activations"] if a["step"])
    fig = histogram_figure(report)
    assert len(fig.axes) == n_quantizers  # one histogram panel each, empty grid cells removed
    bars = sqnr_figure(report).axes[0].patches
    assert len(bars) == 2 * n_quantizers  # accumulated and local SQNR per quantizer
    paths = write_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["histograms.png", "sqnr.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert [e["panels"] for e in report["plots"]] == [n_quantizers, 1]


def test_quantize_command_writes_report_and_plots(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    out, rep, plots = tmp_path / "q.onnx", tmp_path / "r.json", tmp_path / "plots"
    r = subprocess.run(
        [sys.executable, "-m", "oxiquant", "quantize", str(examples.DIGITS_MODEL), "-c",
         f"{examples.DIGITS_DATA}:calib_images", "--bits", "4", "--format", "fake", "-o", str(out),
         "--report", str(rep), "--plots", str(plots), "--report-samples", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    assert report["samples"] == 8 and report["settings"]["bits"] == 4
    names = [a["name"] for a in oxiquant.load(out).quant_info["activations"]] or None
    del names  # a saved model is plain ONNX: the report carries the quantizer list
    assert len(report["layers"]) == 9 and report["plots"][0]["panels"] == 9
    for layer in report["layers"]:
        assert layer["name"] in r.stdout  # the terminal table
    assert (plots / "histograms.png").is_file() and (plots / "sqnr.png").is_file()

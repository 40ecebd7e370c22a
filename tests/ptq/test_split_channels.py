"""Outlier channel splitting (`split_outlier_channels`): a LayerNorm output with a few channels
far above the rest, read by a MatMul and by a residual Add. The split keeps the float function
(against onnxruntime's float run of the original model), bounds every channel, leaves the
residual reading the value itself, and lowers the quantization error; the integer engine
and both exports agree on the split model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant
from oxiquant import InvalidArgumentError
from oxiquant.report import format_report, layer_report

D, S = 32, 6
OUTLIERS = {3: 24.0, 17: 12.0}


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((got - ref).astype(np.float64) ** 2).sum()))


def layer_norm_block(seed: int = 0) -> onnx.ModelProto:
    """x [N, S, D] -> LayerNormalization (gamma large on two channels) -> h;
    y = (h @ W + b) + h (a post-LN transformer's projection and residual)."""
    rng = np.random.default_rng(seed)
    gamma = 1 + 0.1 * rng.random(D)
    for c, g in OUTLIERS.items():
        gamma[c] = g
    w = rng.normal(size=(D, D)) / np.sqrt(D)
    inits = [
        nh.from_array(gamma.astype(np.float32), "gamma"),
        nh.from_array((0.1 * rng.normal(size=D)).astype(np.float32), "beta"),
        nh.from_array(w.astype(np.float32), "W"),
        nh.from_array((0.1 * rng.normal(size=D)).astype(np.float32), "b"),
    ]
    nodes = [
        h.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], axis=-1, name="ln"),
        h.make_node("MatMul", ["h", "W"], ["m"], name="proj"),
        h.make_node("Add", ["m", "b"], ["p"], name="proj_bias"),
        h.make_node("Add", ["p", "h"], ["y"], name="residual"),
    ]
    graph = h.make_graph(
        nodes,
        "ln_block",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", S, D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", S, D])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, S, D)).astype(np.float32)


def test_split_keeps_the_float_function_and_bounds_the_channels():
    proto = layer_norm_block()
    m = oxiquant.load(proto)
    oxiquant.prepare_network(m)
    report = oxiquant.split_outlier_channels(m, data(16, 1), ratio=4.0, progress=False)
    assert list(report) == ["h"], report
    r = report["h"]
    assert r["channels"] == D and r["readers"] == ["proj"], r
    # Channels 3 and 17 are about 24 and 12 times the median range: split into enough copies
    # to fall within 4 times it, and only they.
    assert r["ratio_before"] > 16 and r["ratio_after"] <= 4.0, r
    assert 5 <= r["added"] <= 12, r
    assert m.quant_info["split_channels"] == report
    x = data(8, 2)
    np.testing.assert_allclose(m.run(x)["y"], run_ort(proto, {"x": x}), rtol=1e-4, atol=1e-4)


def test_split_lowers_the_quantization_error_and_runs_the_same_everywhere():
    proto = layer_norm_block()
    calib, x = data(64, 3), data(32, 4)
    ref = run_ort(proto, {"x": x})
    plain = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, split_channels=False, progress=False)
    split = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, progress=False)
    assert plain.quant_info["split_channels"] is None
    assert split.quant_info["split_channels"]["h"]["added"] > 0
    # The split value's quantizer keeps its whole range.
    clipping = {a["tensor"]: a["clipping"] for a in split.quant_info["activations"]}
    assert "max" in [c for t, c in clipping.items() if t.startswith("h/split_scaled")], clipping
    got_plain, got_split = plain.run(x)["y"], split.run(x)["y"]
    assert split.engine == "int", split.engine_note
    assert sqnr_db(ref, got_split) > sqnr_db(ref, got_plain) + 6, (sqnr_db(ref, got_split), sqnr_db(ref, got_plain))
    np.testing.assert_allclose(got_split, split.run(x, mode="fake")["y"], rtol=1e-5, atol=1e-5)
    for fmt in ("qdq", "qoperator"):
        np.testing.assert_allclose(run_ort(split.to_onnx(fmt), {"x": x}), got_split, rtol=1e-4, atol=1e-4, err_msg=fmt)
    # The report says what the pass did.
    report = layer_report(oxiquant.load(proto), split, x[:4])
    assert report["passes"]["split_channels"] == split.quant_info["split_channels"]
    assert "outlier channels split: 1 values" in format_report(report)


def test_aidge_preset_and_cnns_do_not_split():
    proto = layer_norm_block()
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, data(16, 5), preset="aidge", progress=False)
    assert q.quant_info["split_channels"] is None
    # A Conv -> Relu -> Conv network has no float island feeding a MatMul: nothing to split,
    # and the calibration set is not run for it.
    rng = np.random.default_rng(0)
    conv = h.make_graph(
        [
            h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
            h.make_node("Relu", ["c1"], ["r1"], name="r1"),
            h.make_node("Conv", ["r1", "w2"], ["y"], name="c2"),
        ],
        "cnn",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [
            nh.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
            nh.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2"),
        ],
    )
    m = oxiquant.load(h.make_model(conv, opset_imports=[h.make_opsetid("", 13)]))
    oxiquant.prepare_network(m)
    assert oxiquant.split_outlier_channels(m, iter([]), progress=False) == {}


@pytest.mark.parametrize("bad", ["4", -1.0, 0.5, float("nan")])
def test_bad_ratios_are_refused(bad):
    proto = layer_norm_block()
    with pytest.raises(InvalidArgumentError, match="split_channels"):
        oxiquant.quantize_network(oxiquant.load(proto), 8, data(8, 6), split_channels=bad, progress=False)
    m = oxiquant.load(proto)
    oxiquant.prepare_network(m)
    if not isinstance(bad, str):
        with pytest.raises(InvalidArgumentError, match="ratio"):
            oxiquant.split_outlier_channels(m, data(8, 6), ratio=bad, progress=False)


def test_a_one_shot_calibration_iterable_cannot_be_read_twice():
    proto = layer_norm_block()
    batches = iter([data(8, 7)])
    with pytest.raises(InvalidArgumentError, match="read a second time"):
        oxiquant.quantize_network(oxiquant.load(proto), 8, batches, split_channels=4.0, progress=False)
    # From the preset, an iterable just runs without the split; a list of batches is read twice.
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, iter([data(8, 7)]), progress=False)
    assert q.quant_info["split_channels"] is None
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, [data(8, 7), data(8, 8)], progress=False)
    assert q.quant_info["split_channels"]["h"]["added"] > 0


# -- convolution inputs: smoothing ---------------------------------------------------------
C, TT = 16, 24


def magnitude_block(seed: int = 0) -> onnx.ModelProto:
    """x [N, C, T] -> |x| * gain (a Sqrt island: sqrt(x^2 * gain^2)), the low channels far
    above the rest, as a spectrogram's low frequencies are -> Conv(k=3) -> Relu -> Conv(1x1),
    conv1 weighing every channel about equally in its output."""
    rng = np.random.default_rng(seed)
    gain = np.exp(-0.6 * np.arange(C)) * 100 + 1  # channel 0: 101, the median channel about 2
    inits = [
        nh.from_array((gain**2).reshape(1, C, 1).astype(np.float32), "g2"),
        # Trained to weigh the loud channels down: each channel adds about as much to conv1.
        nh.from_array((rng.normal(size=(8, C, 3)) / np.sqrt(3 * C) / gain[:, None]).astype(np.float32), "w1"),
        nh.from_array((0.1 * rng.normal(size=8)).astype(np.float32), "b1"),
        nh.from_array((rng.normal(size=(4, 8, 1)) / np.sqrt(8)).astype(np.float32), "w2"),
    ]
    nodes = [
        h.make_node("Mul", ["x", "x"], ["sq"], name="square"),
        h.make_node("Mul", ["sq", "g2"], ["power"], name="gain"),
        h.make_node("Sqrt", ["power"], ["mag"], name="sqrt"),
        h.make_node("Conv", ["mag", "w1", "b1"], ["c1"], pads=[1, 1], name="conv1"),
        h.make_node("Relu", ["c1"], ["r1"], name="relu"),
        h.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    graph = h.make_graph(
        nodes,
        "magnitudes",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", C, TT])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def spectra(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, C, TT)).astype(np.float32)


def test_convolution_inputs_are_smoothed_keeping_the_function():
    proto = magnitude_block()
    m = oxiquant.load(proto)
    oxiquant.prepare_network(m)
    report = oxiquant.split_outlier_channels(m, spectra(16, 1), progress=False)
    assert list(report) == ["mag"], report
    r = report["mag"]
    assert r["method"] == "smooth" and r["added"] == 0 and r["readers"] == ["conv1"], r
    assert r["ratio_before"] > 16 and r["ratio_after"] < r["ratio_before"] / 4, r
    x = spectra(8, 2)
    np.testing.assert_allclose(m.run(x)["y"], run_ort(proto, {"x": x}), rtol=1e-4, atol=1e-4)


def test_smoothing_lowers_the_quantization_error_and_runs_the_same_everywhere():
    proto = magnitude_block()
    calib, x = spectra(64, 3), spectra(32, 4)
    ref = run_ort(proto, {"x": x})
    plain = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, split_channels=False, progress=False)
    smooth = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, progress=False)
    assert smooth.quant_info["split_channels"]["mag"]["method"] == "smooth"
    got_plain, got_smooth = plain.run(x)["y"], smooth.run(x)["y"]
    assert smooth.engine == "int", smooth.engine_note
    assert sqnr_db(ref, got_smooth) > sqnr_db(ref, got_plain) + 10, (sqnr_db(ref, got_smooth), sqnr_db(ref, got_plain))
    np.testing.assert_allclose(got_smooth, smooth.run(x, mode="fake")["y"], rtol=1e-5, atol=1e-5)
    for fmt in ("qdq", "qoperator"):
        exported = run_ort(smooth.to_onnx(fmt), {"x": x})
        np.testing.assert_allclose(exported, got_smooth, rtol=1e-4, atol=1e-4, err_msg=fmt)
    report = layer_report(oxiquant.load(proto), smooth, x[:4])
    assert "outlier channels smoothed into the weights: 1 values" in format_report(report)

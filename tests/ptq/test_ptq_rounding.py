"""GPTQ rounding, bias correction and per-layer weight widths, through the Python API:
the float reference is onnxruntime on the same ONNX model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import oxiquant

import zoo
from ptq_graphs import init, small_cnn

VI = helper.make_tensor_value_info


def ort_run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def one_conv(seed: int = 0) -> onnx.ModelProto:
    g = np.random.default_rng(seed)
    inits = [init("w", g.uniform(-1, 1, (6, 4, 3, 3))), init("b", g.uniform(-0.2, 0.2, 6))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 4, 6, 6])], [VI("y", TensorProto.FLOAT, ["N", 6, 6, 6])], inits
    )


def shifted_inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Inputs whose channel means are far from 0 (what makes the rounding shift the mean)."""
    return (rng.standard_normal((n, 4, 6, 6)) + rng.uniform(1, 3, (1, 4, 1, 1))).astype(np.float32)


def test_bias_correction_keeps_the_float_mean_output(rng):
    proto = one_conv()
    x = shifted_inputs(rng, 48)
    want = ort_run(proto, x).mean(axis=(0, 2, 3))
    m = oxiquant.load(proto)
    shift = {}
    for bc in (False, True):
        # 16-bit activations and wide clipping room: the weights' 3-bit rounding is the error.
        q = oxiquant.quantize_network(m, 16, x, weight_bits=3, clipping="max", bias_correction=bc, gptq=False)
        got = q.run(x)["y"].mean(axis=(0, 2, 3))
        shift[bc] = np.abs(got - want).max() / np.abs(want).max()
    assert shift[True] < 2e-3, shift
    assert shift[False] > 10 * shift[True], shift


def test_gptq_lowers_the_output_error_of_a_layer(rng):
    proto = one_conv(1)
    x = shifted_inputs(rng, 48)
    ref = ort_run(proto, x)
    m = oxiquant.load(proto)
    err = {}
    for gptq in (False, True):
        q = oxiquant.quantize_network(m, 16, x, weight_bits=3, clipping="max", gptq=gptq, bias_correction=False)
        err[gptq] = float(np.mean((q.run(x)["y"] - ref) ** 2))
    assert err[True] < err[False], err


def test_step_by_step_equals_the_one_liner(rng):
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    m = oxiquant.load(small_cnn())
    one = oxiquant.quantize_network(m, 4, x, gptq=True, bias_correction=True, input_aware=False, layer_samples=20)
    s = m.copy()
    oxiquant.prepare_network(s)
    oxiquant.insert_scaling_nodes(s)
    oxiquant.normalize_parameters(s)
    oxiquant.compute_ranges(s, x, layer_statistics=20)
    oxiquant.adjust_ranges(s, nb_bits=4)
    oxiquant.normalize_activations(s)
    oxiquant.round_weights(s, 4, gptq=True, bias_correction=True)
    oxiquant.quantize_normalized_network(s, 4)
    np.testing.assert_array_equal(one.run(x)["y"], s.run(x)["y"])


def test_round_weights_needs_layer_statistics_and_the_same_width(rng):
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    m = oxiquant.load(small_cnn())
    oxiquant.prepare_network(m)
    oxiquant.insert_scaling_nodes(m)
    oxiquant.normalize_parameters(m)
    oxiquant.compute_ranges(m, x)
    oxiquant.adjust_ranges(m, nb_bits=8)
    oxiquant.normalize_activations(m)
    with pytest.raises(oxiquant.InvalidArgumentError, match="layer_statistics"):
        oxiquant.round_weights(m, 4)
    oxiquant.round_weights(m, 4, gptq=False, bias_correction=False)
    with pytest.raises(oxiquant.InvalidArgumentError, match="4 bits"):
        oxiquant.quantize_normalized_network(m, 8)
    with pytest.raises(oxiquant.InvalidArgumentError, match="layer_statistics"):
        oxiquant.compute_ranges(m, x, layer_statistics=-1)


def test_layer_bits_and_first_last_bits_set_the_weight_widths(rng):
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    m = oxiquant.load(small_cnn())
    p = m.copy()
    oxiquant.prepare_network(p)
    layers = oxiquant.affine_layers(p)
    assert layers == ["conv1", "conv2", "fc"]
    q = oxiquant.quantize_network(m, 8, x, weight_bits=4, layer_bits={"conv2": 3}, first_last_bits=8)
    bits = {w["name"]: w["weight_bits"] for w in q.quant_info["weights"]}
    assert bits == {"conv1": 8, "conv2": 3, "fc": 8}
    with pytest.raises(oxiquant.InvalidArgumentError, match="'nope' is not an affine node"):
        oxiquant.quantize_network(m, 8, x, layer_bits={"nope": 4})
    with pytest.raises(oxiquant.InvalidArgumentError, match="layer_bits"):
        oxiquant.quantize_network(m, 8, x, layer_bits={"conv2": 1})


def test_activation_bits_and_first_last_bits_set_the_activation_widths(rng):
    """`first_last_bits` puts the codes the first and last layer read (the input quantizer;
    the Add before the pooled classifier) on its width; `activation_bits` names single
    activations by value or quantizer; a merge's inputs share the widest; the engine's
    integers match the QDQ export run in onnxruntime; an unknown name is refused."""
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    m = oxiquant.load(small_cnn())

    def widths(q):
        return {a["tensor"]: (a["bits"], a["codes"]) for a in q.quant_info["activations"] if a["bits"]}

    q = oxiquant.quantize_network(m, 4, x, first_last_bits=8, dequantize_outputs=False, progress=False)
    got = widths(q)
    input_q = next(a["tensor"] for a in q.quant_info["activations"] if a["role"] == "input")
    assert got[input_q] == (8, [-128, 127]) and got["res"] == (8, [0, 255])
    assert {t: b for t, (b, _) in got.items() if t not in (input_q, "res")} == dict.fromkeys(
        [t for t in got if t not in (input_q, "res")], 4
    )
    sess = ort.InferenceSession(q.to_onnx("qdq").SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], q.run(x)["y"])
    # By value (conv2's output) and by quantizer name: conv2 shares the Add with the
    # shortcut's branch quantizer, which takes its width.
    q = oxiquant.quantize_network(m, 4, x, activation_bits={"c2": 6, "fc_scaling": 8}, progress=False)
    got = widths(q)
    shortcut = next(a["tensor"] for a in q.quant_info["activations"] if a["role"] == "branch")
    assert got["c2"] == (6, [-32, 31]) and got[shortcut][0] == 6 and got["y"][0] == 8
    assert got["res"][0] == 4
    with pytest.raises(oxiquant.InvalidArgumentError, match="'nope' is neither a quantizer"):
        oxiquant.quantize_network(m, 4, x, activation_bits={"nope": 8}, progress=False)
    with pytest.raises(oxiquant.InvalidArgumentError, match="activation_bits"):
        oxiquant.quantize_network(m, 4, x, activation_bits={"c2": 1}, progress=False)


def test_cli_flags_give_the_api_result(tmp_path):
    """`oxiquant quantize` with the rounding and mixed-precision flags writes the model the
    Python API gives for the same options (run through onnxruntime)."""
    import subprocess
    import sys

    from oxiquant import examples

    with np.load(examples.DIGITS_DATA) as d:
        calib, x = d["calib_images"], d["test_images"][:100].astype(np.float32)
    model = oxiquant.load(examples.DIGITS_MODEL)
    p = model.copy()
    oxiquant.prepare_network(p)
    first = oxiquant.affine_layers(p)[0]
    out = tmp_path / "q.onnx"
    args = ["quantize", str(examples.DIGITS_MODEL), "-c", f"{examples.DIGITS_DATA}:calib_images", "-o", str(out)]
    args += ["--bits", "8", "--weight-bits", "4", "--gptq", "--no-bias-correction", "--layer-samples", "64"]
    args += ["--layer-bits", f"{first}=3", "--first-last-bits", "8", "--format", "fake", "--quiet"]
    args += ["--activation-bits", "image=6"]
    r = subprocess.run([sys.executable, "-m", "oxiquant", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    q = oxiquant.quantize_network(
        model, 8, calib, weight_bits=4, gptq=True, bias_correction=False, layer_samples=64,
        layer_bits={first: 3}, first_last_bits=8, activation_bits={"image": 6}, progress=False,
    )
    assert {w["name"]: w["weight_bits"] for w in q.quant_info["weights"]}[first] == 3
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    want = q.run(x, mode="fake")["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    r = subprocess.run(
        [sys.executable, "-m", "oxiquant", *args[:6], "--layer-bits", "conv_nope"], capture_output=True, text=True
    )
    assert r.returncode != 0 and "NAME=BITS" in r.stderr

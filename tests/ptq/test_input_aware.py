"""Input-aware rounding (`input_aware`): each layer's weights fitted to the inputs it reads in
the quantized network. The float reference is onnxruntime on the same ONNX model."""

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


def conv_chain(seed: int = 0) -> onnx.ModelProto:
    """Three 3x3 convolutions, Relus between them: [N,4,8,8] -> [N,6,8,8]."""
    g = np.random.default_rng(seed)
    inits, nodes, x = [], [], "x"
    for i, (cin, cout) in enumerate(((4, 8), (8, 8), (8, 6))):
        w = g.uniform(-1, 1, (cout, cin, 3, 3)) / np.sqrt(cin * 3)
        inits += [init(f"w{i}", w), init(f"b{i}", g.uniform(0, 0.3, cout))]
        out = "y" if i == 2 else f"c{i}"
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [out], pads=[1, 1, 1, 1], name=f"conv{i}"))
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 4, 8, 8])], [VI("y", TensorProto.FLOAT, ["N", 6, 8, 8])], inits
    )


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_aware_lowers_the_output_error_at_4_bits(seed):
    rng = np.random.default_rng(seed)
    proto = conv_chain(seed)
    x = rng.standard_normal((64, 4, 8, 8)).astype(np.float32)
    ref = ort_run(proto, x)
    m = oxiquant.load(proto)
    err = {}
    for aware in (False, True):
        q = oxiquant.quantize_network(m, 4, x, weight_bits=4, input_aware=aware, layer_samples=64)
        err[aware] = mse(q.run(x)["y"], ref)
    assert err[True] < err[False], err


def test_with_nearly_exact_inputs_it_is_no_worse_than_gptq(rng):
    """16-bit activations: the quantized inputs are the float ones (to 1e-5), the fit leaves
    the weights where they are, and the rounding is chosen on the same error as GPTQ's."""
    g = np.random.default_rng(3)
    proto = zoo.make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")],
        [VI("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [VI("y", TensorProto.FLOAT, ["N", 6, 6, 6])],
        [init("w", g.uniform(-1, 1, (6, 4, 3, 3))), init("b", g.uniform(-0.2, 0.2, 6))],
    )
    x = (rng.standard_normal((48, 4, 6, 6)) + rng.uniform(1, 3, (1, 4, 1, 1))).astype(np.float32)
    ref = ort_run(proto, x)
    m = oxiquant.load(proto)
    err = {}
    for aware in (False, True):
        q = oxiquant.quantize_network(
            m, 16, x, weight_bits=3, clipping="max", gptq=True, bias_correction=False, input_aware=aware
        )
        err[aware] = mse(q.run(x)["y"], ref)
    assert err[True] <= err[False] * 1.001, err


def test_bias_correction_matches_the_float_mean_output(rng):
    proto = conv_chain(4)
    x = (rng.standard_normal((64, 4, 8, 8)) + 1.0).astype(np.float32)
    want = ort_run(proto, x).mean(axis=(0, 2, 3))
    m = oxiquant.load(proto)
    shift = {}
    for bc in (False, True):
        q = oxiquant.quantize_network(
            m, 8, x, weight_bits=3, clipping="max", gptq=True, bias_correction=bc, input_aware=True
        )
        got = q.run(x)["y"].mean(axis=(0, 2, 3))
        shift[bc] = float(np.abs(got - want).max() / np.abs(want).max())
    assert shift[True] < shift[False], shift
    assert shift[True] < 5e-3, shift


def test_step_by_step_equals_the_one_liner(rng):
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    m = oxiquant.load(small_cnn())
    one = oxiquant.quantize_network(m, 4, x, input_aware=True, layer_samples=20)
    s = m.copy()
    oxiquant.prepare_network(s)
    oxiquant.insert_scaling_nodes(s)
    oxiquant.normalize_parameters(s)
    oxiquant.compute_ranges(s, x)
    oxiquant.adjust_ranges(s, nb_bits=4)
    oxiquant.normalize_activations(s)
    oxiquant.round_weights(s, 4, input_aware=x, nb_bits=4, input_samples=20)
    oxiquant.quantize_normalized_network(s, 4)
    np.testing.assert_array_equal(one.run(x)["y"], s.run(x)["y"])


def test_argument_errors(rng):
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    m = oxiquant.load(small_cnn())
    with pytest.raises(oxiquant.InvalidArgumentError, match="array or a dict"):
        oxiquant.quantize_network(m, 4, iter([x]), input_aware=True)
    with pytest.raises(oxiquant.InvalidArgumentError, match="single_shift"):
        oxiquant.quantize_network(m, 4, x, input_aware=True, single_shift=True)
    s = m.copy()
    oxiquant.prepare_network(s)
    oxiquant.insert_scaling_nodes(s)
    oxiquant.normalize_parameters(s)
    oxiquant.compute_ranges(s, x)
    oxiquant.adjust_ranges(s, nb_bits=4)
    oxiquant.normalize_activations(s)
    with pytest.raises(oxiquant.InvalidArgumentError, match="nb_bits"):
        oxiquant.round_weights(s, 4, input_aware=x)
    with pytest.raises(oxiquant.InvalidArgumentError, match="input_samples"):
        oxiquant.round_weights(s, 4, input_aware=x, nb_bits=4, input_samples=0)

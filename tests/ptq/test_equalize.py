"""Cross-layer equalization (`equalize_layers`, `quantize_network(equalize=True)`): the float
function is unchanged (onnxruntime on the original model is the reference), channel ranges
are balanced as DFQ's formula says (recomputed in numpy), residual groups share one factor,
and bounded Clips stop it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from onnx import TensorProto, helper, numpy_helper

import oxiquant

import ptq_graphs
import zoo
from ptq_graphs import init
from reference import assert_close, ort_run, sqnr_db

VI = helper.make_tensor_value_info


def weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Weight of every Conv/Gemm by node name."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {n.name: inits[n.input[1]] for n in proto.graph.node if n.op_type in ("Conv", "Gemm")}


def biases(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {n.name: inits[n.input[2]] for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}


def equalized(proto: onnx.ModelProto) -> tuple[oxiquant.Model, dict]:
    m = oxiquant.load(proto)
    oxiquant.prepare_network(m)
    return m, oxiquant.equalize_layers(m)


def skewed(rng: np.random.Generator, shape: tuple[int, ...], spread: float = 3.0) -> np.ndarray:
    """Weights whose output channels span `10**spread` in range."""
    w = rng.uniform(-1, 1, shape)
    return w * (10.0 ** rng.uniform(-spread / 2, spread / 2, (shape[0],) + (1,) * (len(shape) - 1)))


def chain(act: str = "Relu", seed: int = 0) -> onnx.ModelProto:
    """x -> conv1 -> act -> conv2 (output y): one pair to equalize."""
    rng = np.random.default_rng(seed)
    inits = [
        init("w1", skewed(rng, (8, 3, 3, 3))),
        init("b1", rng.uniform(-1, 1, 8)),
        init("w2", rng.uniform(-1, 1, (5, 8, 1, 1))),
        init("b2", rng.uniform(-1, 1, 5)),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="conv1")]
    if act == "Relu6":
        inits += [init("lo", np.array(0.0)), init("hi", np.array(6.0))]
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act"))
    else:
        nodes.append(helper.make_node(act, ["h"], ["a"], name="act"))
    nodes.append(helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2"))
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 3, 6, 6])], [VI("y", TensorProto.FLOAT, ["N", 5, 6, 6])], inits
    )


@given(ptq_graphs.networks())
def test_equalization_keeps_the_float_function(proto):
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(0), 4)
    want = ort_run(proto, x)["y"]
    m, report = equalized(proto)
    assert m.quant_info["equalization"]["groups"] == report["groups"]
    exported = m.to_onnx()
    assert_close(ort_run(exported, x)["y"], want, "onnxruntime on the equalized model vs the original", rtol=1e-3)
    assert_close(m.run(x)["y"], want, "the equalized model vs the original", rtol=1e-3)


def test_a_chain_is_equalized_as_dfq_says():
    proto = chain()
    w = weights(proto)
    b = biases(proto)
    # DFQ for one pair: s_i = sqrt(r1_i / r2_i), r1 the range of row i of W1, r2 that of
    # column i of W2; W1 rows and b1 divided by s, W2 columns multiplied by s.
    r1 = np.abs(w["conv1"]).reshape(8, -1).max(axis=1)
    r2 = np.abs(w["conv2"]).transpose(1, 0, 2, 3).reshape(8, -1).max(axis=1)
    s = np.sqrt(r1 / r2)
    m, report = equalized(proto)
    got = weights(m.to_onnx())
    gotb = biases(m.to_onnx())
    np.testing.assert_allclose(got["conv1"], w["conv1"] / s[:, None, None, None], rtol=1e-5)
    np.testing.assert_allclose(gotb["conv1"], b["conv1"] / s, rtol=1e-5)
    np.testing.assert_allclose(got["conv2"], w["conv2"] * s[None, :, None, None], rtol=1e-5)
    np.testing.assert_allclose(gotb["conv2"], b["conv2"], rtol=1e-6)
    assert report["groups"] == 8 and report["channels"] == 8
    before, after = report["layers"]["conv1"]
    ranges = np.abs(got["conv1"]).reshape(8, -1).max(axis=1)
    assert after == pytest.approx(ranges.min() / ranges.max(), rel=1e-5)
    assert after > 10 * before, report["layers"]  # sqrt of a 1000x spread


@pytest.mark.parametrize("act", ["LeakyRelu", "Relu"])
def test_homogeneous_activations_let_it_through(act, rng):
    proto = chain(act)
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    m, report = equalized(proto)
    assert report["groups"] == 8
    assert_close(m.run(x)["y"], ort_run(proto, x)["y"], "equalized vs original")


def test_relu6_stops_it():
    proto = chain("Relu6")
    m, report = equalized(proto)
    assert report["groups"] == 0 and report["pinned_channels"] == 8 + 5
    got = weights(m.to_onnx())
    for name, w in weights(proto).items():
        np.testing.assert_array_equal(got[name], w)


def residual(seed: int = 0, spread: float = 3.0) -> onnx.ModelProto:
    """Two convs writing into one Add, a Relu, then two convs (one depthwise, then a
    pointwise one) and a Gemm head reading it: one group of channels with two producers and
    two consumers, and a depthwise layer that passes its factors on. The weights are balanced
    ones with each group's channels then scaled by factors spanning `10**spread` (rows divided,
    reading columns multiplied): the same function, badly suited to per-tensor weights."""
    rng = np.random.default_rng(seed)
    c = 6
    u = lambda *shape: rng.uniform(-1, 1, shape)  # noqa: E731
    d = 10.0 ** rng.uniform(-spread / 2, spread / 2, c)  # the Add's group
    e = 10.0 ** rng.uniform(-spread / 2, spread / 2, c)  # the depthwise output's group
    col = (None, slice(None), None, None)
    inits = [
        init("wa", u(c, 3, 3, 3) / d[:, None, None, None]),
        init("ba", u(c) / d),
        init("wb", u(c, 3, 1, 1) / d[:, None, None, None]),
        init("wd", u(c, 1, 3, 3) * (d / e)[:, None, None, None]),
        init("bd", u(c) / e),
        init("wp", u(4, c, 1, 1) * e[col]),
        init("wc", u(c, c, 1, 1) * d[col]),
        init("wg", u(3, 4 + c)),
        init("bg", u(3)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wd", "bd"], ["d"], pads=[1, 1, 1, 1], group=c, name="conv_dw"),
        helper.make_node("Relu", ["d"], ["dr"], name="relu_dw"),
        helper.make_node("Conv", ["dr", "wp"], ["p"], name="conv_pw"),
        helper.make_node("Conv", ["r", "wc"], ["q"], name="conv_c"),
        helper.make_node("Concat", ["p", "q"], ["cat"], axis=1, name="cat"),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1, name="fc"),
    ]
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 3, 5, 5])], [VI("y", TensorProto.FLOAT, ["N", 3])], inits
    )


def test_layers_meeting_at_an_add_share_one_factor(rng):
    proto = residual()
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    m, report = equalized(proto)
    assert_close(m.run(x)["y"], ort_run(proto, x)["y"], "equalized vs original")
    w, got = weights(proto), weights(m.to_onnx())
    rows = lambda a: np.abs(a).reshape(a.shape[0], -1).max(axis=1)  # noqa: E731
    # Both producers of the Add scaled by the same per-channel factor.
    fa = w["conv_a"].reshape(6, -1)[:, 0] / got["conv_a"].reshape(6, -1)[:, 0]
    fb = w["conv_b"].reshape(6, -1)[:, 0] / got["conv_b"].reshape(6, -1)[:, 0]
    np.testing.assert_allclose(fa, fb, rtol=1e-5)
    assert np.ptp(np.log(fa)) > 1.0, "the factors should differ between channels"
    # Converged: in each channel of the group, the largest producer row and the largest
    # consumer column (the depthwise row, the pointwise column) have the same range.
    prod = np.maximum(rows(got["conv_a"]), rows(got["conv_b"]))
    cons = np.maximum(rows(got["conv_dw"]), np.abs(got["conv_c"]).max(axis=(0, 2, 3)))
    np.testing.assert_allclose(prod, cons, rtol=1e-3)
    # The depthwise conv's outputs form groups of their own with conv_pw; the Concat reaches
    # the Gemm through a Flatten, which pins those channels.
    assert report["groups"] == 12, report
    dw_rows = rows(got["conv_dw"])
    pw_cols = np.abs(got["conv_pw"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(dw_rows, pw_cols, rtol=1e-3)
    np.testing.assert_array_equal(got["fc"], w["fc"])


def test_per_tensor_weights_gain_from_it(rng):
    proto = residual(1)
    calib = rng.standard_normal((64, 3, 5, 5)).astype(np.float32)
    x = rng.standard_normal((64, 3, 5, 5)).astype(np.float32)
    want = ort_run(proto, x)["y"]
    m = oxiquant.load(proto)
    sqnr = {}
    for eq in (False, True):
        q = oxiquant.quantize_network(
            m, 8, calib, per_channel=False, weight_bits=6, equalize=eq, gptq=False, bias_correction=False
        )
        sqnr[eq] = sqnr_db(want, q.run(x)["y"])
        assert (q.quant_info["equalization"] is not None) == eq
    assert sqnr[True] > sqnr[False] + 6, sqnr


def test_equalize_needs_a_prepared_float_model():
    m = oxiquant.load(chain())
    with pytest.raises(oxiquant.InvalidArgumentError, match="prepare_network"):
        oxiquant.equalize_layers(m)
    oxiquant.prepare_network(m)
    oxiquant.insert_scaling_nodes(m)
    with pytest.raises(oxiquant.InvalidArgumentError, match="past this step"):
        oxiquant.equalize_layers(m)
    with pytest.raises(oxiquant.InvalidArgumentError, match="max_sweeps"):
        oxiquant.equalize_layers(oxiquant.load(chain()), max_sweeps=0)


# -- automatic bit allocation (weight_bits_budget) ----------------------------------------
def two_branches(seed: int = 0) -> onnx.ModelProto:
    """y = conv_a(x) + conv_b(x), conv_a's weights 10x conv_b's: its rounding noise reaches
    the output 100x stronger."""
    rng = np.random.default_rng(seed)
    inits = [init("wa", 10 * rng.uniform(-1, 1, (8, 4, 3, 3))), init("wb", rng.uniform(-1, 1, (8, 4, 3, 3)))]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Conv", ["x", "wb"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 4, 6, 6])], [VI("y", TensorProto.FLOAT, ["N", 8, 6, 6])], inits
    )


def test_the_budget_goes_to_the_sensitive_layer(rng):
    proto = two_branches()
    calib = rng.standard_normal((32, 4, 6, 6)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, weight_bits_budget=6.0)
    bits = {w["name"]: w["weight_bits"] for w in q.quant_info["weights"]}
    alloc = q.quant_info["bit_allocation"]
    assert {k: v["bits"] for k, v in alloc.items()} == bits
    assert bits["conv_a"] > bits["conv_b"] >= 4, bits
    assert alloc["conv_a"]["sensitivity"] > 10 * alloc["conv_b"]["sensitivity"], alloc
    mean = sum(v["weights"] * v["bits"] for v in alloc.values()) / sum(v["weights"] for v in alloc.values())
    assert mean <= 6.0


def test_allocation_respects_the_budget_and_fixed_layers():
    from oxiquant.bits import allocate_bits

    r = np.random.default_rng(0)
    sens = {f"l{i}": (int(r.integers(10, 1000)), float(10 ** r.uniform(-3, 1))) for i in range(12)}
    total = sum(n for n, _ in sens.values())
    for budget in (5.0, 5.5, 6.25, 8.0):
        bits = allocate_bits(sens, budget, 4, 8, fixed={"l0": 8})
        assert bits["l0"] == 8 and all(4 <= b <= 8 for b in bits.values())
        assert sum(sens[k][0] * b for k, b in bits.items()) <= budget * total + 1e-6
        # Greedy to the end: no layer below 8 could take one more bit within the budget.
        left = budget * total - sum(sens[k][0] * b for k, b in bits.items())
        assert all(bits[k] == 8 or k == "l0" or sens[k][0] > left for k in sens)
    with pytest.raises(oxiquant.InvalidArgumentError, match="weight_bits_budget"):
        allocate_bits(sens, 4.0, 4, 8, fixed={"l0": 8})
    with pytest.raises(oxiquant.InvalidArgumentError, match="weight_bits_budget"):
        zeros = np.zeros((4, 4, 6, 6), np.float32)
        oxiquant.quantize_network(oxiquant.load(two_branches()), 8, zeros, weight_bits_budget=3)


# -- automatic activation bit allocation (activation_bits_budget) ---------------------------
def two_read_branches(seed: int = 0) -> onnx.ModelProto:
    """y = conv_c(relu(conv_a(x))) + conv_d(relu(conv_b(x))), conv_c's weights 10x conv_d's:
    the quantization noise of relu_a's output reaches y 100x stronger than relu_b's."""
    rng = np.random.default_rng(seed)
    inits = [
        init("wa", rng.uniform(-1, 1, (8, 4, 3, 3))),
        init("wb", rng.uniform(-1, 1, (8, 4, 3, 3))),
        init("wc", 10 * rng.uniform(-1, 1, (8, 8, 1, 1))),
        init("wd", rng.uniform(-1, 1, (8, 8, 1, 1))),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["x", "wb"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["ra", "wc"], ["c"], name="conv_c"),
        helper.make_node("Conv", ["rb", "wd"], ["d"], name="conv_d"),
        helper.make_node("Add", ["c", "d"], ["y"], name="add"),
    ]
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 4, 6, 6])], [VI("y", TensorProto.FLOAT, ["N", 8, 6, 6])], inits
    )


def test_the_activation_budget_goes_to_the_sensitive_activation(rng):
    proto = two_read_branches()
    calib = rng.standard_normal((32, 4, 6, 6)).astype(np.float32)
    x = rng.standard_normal((16, 4, 6, 6)).astype(np.float32)
    m = oxiquant.load(proto)
    q = oxiquant.quantize_network(m, 4, calib, activation_bits_budget=5.0, dequantize_outputs=False, progress=False)
    acts = {a["tensor"]: a for a in q.quant_info["activations"] if a["bits"]}
    alloc = q.quant_info["activation_bit_allocation"]
    # Each group's width is what its quantizers code on; the Add's inputs are one group.
    by_name = {a["name"]: a for a in acts.values()}
    for g in alloc.values():
        assert {by_name[n]["bits"] for n in g["quantizers"]} == {g["bits"]}, g
    assert any({by_name[n]["tensor"] for n in g["quantizers"]} == {"c", "d"} for g in alloc.values()), alloc
    sens = {by_name[g["quantizers"][0]]["tensor"]: g["sensitivity"] for g in alloc.values()}
    assert sens["a"] > 10 * sens["b"], sens
    count = {t: a["stats"]["count"] for t, a in acts.items()}
    assert sum(count[t] * a["bits"] for t, a in acts.items()) <= 5.0 * sum(count.values()) + 1e-6
    # With every other quantizer held at 8 bits (by value; the input by the graph input's
    # name), the bits left go to relu_a's input, not relu_b's.
    held = {"x": 8, "c": 8, "y": 8}
    q = oxiquant.quantize_network(m, 4, calib, activation_bits=held, activation_bits_budget=7.0, progress=False)
    got = {a["name"]: a["bits"] for a in q.quant_info["activations"] if a["bits"]}
    size = {a["name"]: a["stats"]["count"] for a in q.quant_info["activations"] if a["bits"]}
    a, b = got.pop("conv_a_scaling"), got.pop("conv_b_scaling")
    assert set(got.values()) == {8}, got
    assert set(q.quant_info["activation_bit_allocation"]) == {"conv_a_scaling", "conv_b_scaling"}
    assert a > b == 4, (a, b)
    spent = sum(size[n] * w for n, w in got.items()) + (a + b) * size["conv_a_scaling"]
    assert spent <= 7.0 * sum(size.values()) + 1e-6
    # Against onnxruntime: the allocation beats uniform 4 bits, and the QDQ file agrees.
    want = ort_run(proto, x)["y"]
    uniform = oxiquant.quantize_network(m, 4, calib, progress=False)
    mixed = oxiquant.quantize_network(m, 4, calib, activation_bits_budget=5.0, progress=False)
    assert sqnr_db(want, mixed.run(x)["y"]) > sqnr_db(want, uniform.run(x)["y"]) + 3
    sess = ort.InferenceSession(q.to_onnx("qdq").SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], q.run(x)["y"])
    # The report says what the allocation chose.
    from oxiquant.report import format_report, layer_report

    text = format_report(layer_report(m, mixed, x[:4]))
    line = next(t for t in text.splitlines() if t.startswith("activation bits by sensitivity:"))
    assert "most sensitive: " in line and "bits on average over their activations" in line, line


def test_activation_budget_arguments_are_checked(rng):
    m = oxiquant.load(two_read_branches())
    calib = rng.standard_normal((8, 4, 6, 6)).astype(np.float32)
    with pytest.raises(oxiquant.InvalidArgumentError, match="nb_bits must be 2 to 7"):
        oxiquant.quantize_network(m, 8, calib, activation_bits_budget=8)
    with pytest.raises(oxiquant.InvalidArgumentError, match="activation_bits_budget must be between 4 and 8"):
        oxiquant.quantize_network(m, 4, calib, activation_bits_budget=3.5)
    with pytest.raises(oxiquant.InvalidArgumentError, match="array or a dict of arrays"):
        oxiquant.quantize_network(m, 4, iter([calib]), activation_bits_budget=5)
    # Fixed widths count in the average: all at 8 leaves nothing for a budget of 4.
    q = oxiquant.quantize_network(m, 4, calib, activation_bits_budget=4.0, first_last_bits=4, progress=False)
    assert {a["bits"] for a in q.quant_info["activations"] if a["bits"]} == {4}


# -- exclude ------------------------------------------------------------------------------
def test_excluded_layers_stay_float_in_the_engine_and_the_exports(rng):
    proto = residual(2, spread=0.0)
    calib = rng.standard_normal((32, 3, 5, 5)).astype(np.float32)
    x = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, exclude=["conv_b", "add"])
    info = q.quant_info
    floats = {n: why for n, _, why in info["float_nodes"]}
    assert "excluded" in floats["conv_b"] and "excluded" in floats["add"], floats
    assert "conv_b" not in {w["name"] for w in info["weights"]}
    assert "conv_a" in {w["name"] for w in info["weights"]}
    want = ort_run(proto, x)["y"]
    got = q.run(x)["y"]
    assert sqnr_db(want, got) > 25
    # QDQ: the excluded Conv reads its float weight as it is; the others read dequantized ones.
    qdq = q.to_onnx(format="qdq")
    dq_out = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    inits = {t.name: t for t in qdq.graph.initializer}
    convs = {n.name: n for n in qdq.graph.node if n.op_type == "Conv"}
    assert convs["conv_b"].input[1] in inits and inits[convs["conv_b"].input[1]].data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(inits[convs["conv_b"].input[1]]), weights(proto)["conv_b"])
    assert convs["conv_a"].input[1] in dq_out
    producer = {o: n for n in qdq.graph.node for o in n.output}
    chain, v = [], convs["conv_b"].input[0]
    while v in producer and len(chain) < 4:
        chain.append(producer[v].op_type)
        v = producer[v].input[0]
    assert "DequantizeLinear" in chain, f"the excluded Conv's input is not dequantized: {chain}"
    # onnxruntime on both exports agrees with the integer engine.
    for fmt in ("qdq", "fake"):
        exported = q.to_onnx(format=fmt)
        np.testing.assert_allclose(ort_run(exported, x)["y"], got, atol=0.05 * np.abs(got).max())


def test_exclude_names_must_be_nodes_reading_activations():
    m = oxiquant.load(chain())
    oxiquant.prepare_network(m)
    with pytest.raises(oxiquant.InvalidArgumentError, match="no node 'nope'"):
        oxiquant.exclude_layers(m, ["nope"])
    oxiquant.exclude_layers(m, "conv2")
    assert [n for n, _, _ in m.quant_info["float_nodes"]] == ["conv2"]
    assert "conv2" not in oxiquant.affine_layers(m)


def test_the_report_shows_what_equalization_and_allocation_did(rng):
    proto = residual(3)
    calib = rng.standard_normal((16, 3, 5, 5)).astype(np.float32)
    m = oxiquant.load(proto)
    q = oxiquant.quantize_network(m, 8, calib, per_channel=False, equalize=True, weight_bits_budget=6.0)
    report = oxiquant.layer_report(m, q, calib[:4])
    eq = report["passes"]["equalization"]
    assert eq["groups"] > 0 and eq["layers"]["conv_a"][1] > eq["layers"]["conv_a"][0]
    assert set(report["passes"]["bit_allocation"]) == set(oxiquant.affine_layers(q))
    text = oxiquant.format_report(report)
    assert "cross-layer equalization: " in text and "weight bits by sensitivity: " in text

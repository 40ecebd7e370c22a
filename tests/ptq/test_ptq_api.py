"""The PTQ API: step order, argument checks, calibration set forms, errors that name what
is wrong, `quant_info`, float islands and degenerate models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import oxiquant

import zoo
from ptq_graphs import dead_conv_cnn, small_cnn, two_input_model

VI = helper.make_tensor_value_info


@pytest.fixture
def calib(rng):
    return rng.standard_normal((40, 3, 8, 8)).astype(np.float32)


@pytest.fixture
def model():
    return oxiquant.load(small_cnn())


def ort_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.mean((got.astype(np.float64) - ref) ** 2))
    return np.inf if noise == 0 else 10 * np.log10(float(np.mean(ref.astype(np.float64) ** 2)) / noise)


def steps_until(m: oxiquant.Model, calib: np.ndarray, last: str) -> None:
    """Runs the steps in order up to and including `last`."""
    steps = [
        ("prepare_network", lambda: oxiquant.prepare_network(m)),
        ("insert_scaling_nodes", lambda: oxiquant.insert_scaling_nodes(m)),
        ("normalize_parameters", lambda: oxiquant.normalize_parameters(m)),
        ("compute_ranges", lambda: oxiquant.compute_ranges(m, calib)),
        ("adjust_ranges", lambda: oxiquant.adjust_ranges(m)),
        ("normalize_activations", lambda: oxiquant.normalize_activations(m)),
        ("quantize_normalized_network", lambda: oxiquant.quantize_normalized_network(m, 8)),
    ]
    for name, run in steps:
        run()
        if name == last:
            return
    raise AssertionError(last)


# -- step order ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("done", "call", "needed"),
    [
        (None, "insert_scaling_nodes", "prepare_network"),
        (None, "normalize_parameters", "prepare_network"),
        ("prepare_network", "normalize_parameters", "insert_scaling_nodes"),
        ("prepare_network", "compute_ranges", "insert_scaling_nodes"),
        ("insert_scaling_nodes", "compute_ranges", "normalize_parameters"),
        ("normalize_parameters", "adjust_ranges", "compute_ranges"),
        ("normalize_parameters", "normalize_activations", "compute_ranges"),
        ("compute_ranges", "quantize_normalized_network", "adjust_ranges"),
        ("adjust_ranges", "quantize_normalized_network", "normalize_activations"),
        ("prepare_network", "quantize_normalized_network", "insert_scaling_nodes"),
    ],
)
def test_steps_out_of_order_name_the_step_to_run_next(model, calib, done, call, needed):
    # The hint is the step that follows the model's current stage (following it leads to
    # `call`), not the one just before `call`.
    if done:
        steps_until(model, calib, done)
    stage = model.quant_info["stage"]
    fn = getattr(oxiquant, call)
    args = {
        "compute_ranges": (calib,),
        "quantize_normalized_network": (8,),
    }.get(call, ())
    with pytest.raises(oxiquant.InvalidArgumentError, match=f"{call}.*run {needed} first"):
        fn(model, *args)
    assert model.quant_info["stage"] == stage  # nothing changed


@pytest.mark.parametrize(
    ("done", "call"),
    [
        ("insert_scaling_nodes", "prepare_network"),
        ("normalize_activations", "normalize_parameters"),
        ("normalize_activations", "compute_ranges"),
        ("quantize_normalized_network", "insert_scaling_nodes"),
        ("quantize_normalized_network", "normalize_activations"),
    ],
)
def test_steps_already_done_say_so(model, calib, done, call):
    # Not "run <the step before> first", which would send the user round in circles.
    steps_until(model, calib, done)
    args = (calib,) if call == "compute_ranges" else ()
    with pytest.raises(oxiquant.InvalidArgumentError, match=f"{call}.*past this step.*float model") as ei:
        getattr(oxiquant, call)(model, *args)
    assert "first" not in str(ei.value)


@pytest.mark.parametrize("again", ["prepare_network", "insert_scaling_nodes", "normalize_parameters"])
def test_a_structural_step_cannot_run_twice(model, calib, again):
    steps_until(model, calib, again)
    with pytest.raises(oxiquant.InvalidArgumentError, match=again):
        getattr(oxiquant, again)(model)


def test_quantized_model_cannot_be_quantized_again(model, calib):
    q = oxiquant.quantize_network(model, 8, calib)
    with pytest.raises(oxiquant.InvalidArgumentError, match="float model"):
        oxiquant.quantize_network(q, 8, calib)
    with pytest.raises(oxiquant.InvalidArgumentError, match="quantize_normalized_network"):
        oxiquant.quantize_normalized_network(q, 8)


def test_ranges_can_be_recomputed_and_clipping_readjusted(calib):
    # compute_ranges and adjust_ranges may run again before normalize_activations.
    m = oxiquant.load(small_cnn())
    steps_until(m, calib, "adjust_ranges")
    oxiquant.adjust_ranges(m, clipping="mse", nb_bits=4)
    first = oxiquant.compute_ranges(m, calib[:10])
    again = oxiquant.compute_ranges(m, calib[:10])
    assert first == again
    oxiquant.adjust_ranges(m, clipping="max")
    oxiquant.normalize_activations(m)
    oxiquant.quantize_normalized_network(m, 8)
    ref = oxiquant.quantize_network(oxiquant.load(small_cnn()), 8, calib[:10], clipping="max")
    np.testing.assert_array_equal(m.run(calib)["y"], ref.run(calib)["y"])


# -- argument checks -------------------------------------------------------------------
BAD_BITS = [0, 1, 17, -3, "8", True, 2.5, None, 8.0]


@pytest.mark.parametrize("bits", BAD_BITS)
def test_bad_bit_widths(model, calib, bits):
    with pytest.raises(oxiquant.InvalidArgumentError, match="nb_bits"):
        oxiquant.quantize_network(model, bits, calib)
    if bits is not None:  # weight_bits=None means "as nb_bits"
        with pytest.raises(oxiquant.InvalidArgumentError, match="weight_bits"):
            oxiquant.quantize_network(model, 8, calib, weight_bits=bits)
    steps_until(model, calib, "compute_ranges")
    with pytest.raises(oxiquant.InvalidArgumentError, match="nb_bits"):
        oxiquant.adjust_ranges(model, nb_bits=bits)
    oxiquant.adjust_ranges(model)
    oxiquant.normalize_activations(model)
    with pytest.raises(oxiquant.InvalidArgumentError, match="nb_bits"):
        oxiquant.quantize_normalized_network(model, bits)
    assert model.quant_info["stage"] == "activations normalized"


@pytest.mark.parametrize("bits", [2, 3, 16, np.int64(8), np.int32(4)])
def test_good_bit_widths(model, calib, bits):
    q = oxiquant.quantize_network(model, bits, calib)
    assert {a["bits"] for a in q.quant_info["activations"] if a["role"] != "dequant"} == {int(bits)}
    assert {w["weight_bits"] for w in q.quant_info["weights"]} == {int(bits)}


@pytest.mark.parametrize("clipping", ["median", "", "l2", None, 3])
def test_unknown_clipping(model, calib, clipping):
    if clipping is not None:  # clipping=None means "the preset's"
        with pytest.raises(oxiquant.InvalidArgumentError, match="clipping"):
            oxiquant.quantize_network(model, 8, calib, clipping=clipping)
    steps_until(model, calib, "compute_ranges")
    with pytest.raises(oxiquant.InvalidArgumentError, match="clipping"):
        oxiquant.adjust_ranges(model, clipping=clipping)


def test_clipping_names_are_case_insensitive(model, calib):
    a = oxiquant.quantize_network(model, 6, calib, clipping="MSE")
    b = oxiquant.quantize_network(model, 6, calib, clipping="mse")
    np.testing.assert_array_equal(a.run(calib)["y"], b.run(calib)["y"])
    assert {x["clipping"] for x in a.quant_info["activations"] if x["role"] != "dequant"} == {"mse"}


@pytest.mark.parametrize("kwargs", [{"weight_clipping": "kl"}, {"batch_size": 0}, {"batch_size": True}])
def test_other_bad_arguments(model, calib, kwargs):
    with pytest.raises(oxiquant.InvalidArgumentError):
        oxiquant.quantize_network(model, 8, calib, **kwargs)


def test_optimize_signs_must_match_between_clipping_and_quantization(model, calib):
    steps_until(model, calib, "compute_ranges")
    oxiquant.adjust_ranges(model, clipping="mse", optimize_signs=True)
    oxiquant.normalize_activations(model)
    with pytest.raises(oxiquant.InvalidArgumentError, match="optimize_signs"):
        oxiquant.quantize_normalized_network(model, 8, optimize_signs=False)
    oxiquant.quantize_normalized_network(model, 8, optimize_signs=True)


# -- calibration data ------------------------------------------------------------------
def test_empty_calibration_set(model, calib):
    for empty in ([], calib[:0], iter([])):
        m = oxiquant.load(small_cnn())
        with pytest.raises(oxiquant.InvalidArgumentError, match="empty"):
            oxiquant.quantize_network(m, 8, empty)
        steps_until(m, calib, "normalize_parameters")
        with pytest.raises(oxiquant.InvalidArgumentError, match="empty"):
            oxiquant.compute_ranges(m, empty)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_calibration_data_with_nan_or_inf_names_the_node(model, calib, bad):
    data = calib.copy()
    data[3, 1, 2, 2] = bad
    with pytest.raises(oxiquant.InvalidArgumentError, match=r"calibration: the output of '\w+'.*NaN/Inf"):
        oxiquant.quantize_network(model, 8, data)
    # The user's model is untouched by the failed call.
    assert model.quant_info["stage"] == "float"
    np.testing.assert_array_equal(model.run(calib)["y"], oxiquant.load(small_cnn()).run(calib)["y"])


def test_failed_calibration_can_be_retried(model, calib):
    steps_until(model, calib, "normalize_parameters")
    data = calib.copy()
    data[-1] = np.nan
    with pytest.raises(oxiquant.InvalidArgumentError, match="NaN"):
        oxiquant.compute_ranges(model, data, batch_size=8)
    oxiquant.compute_ranges(model, calib)
    oxiquant.adjust_ranges(model)
    oxiquant.normalize_activations(model)
    oxiquant.quantize_normalized_network(model, 8)
    ref = oxiquant.quantize_network(oxiquant.load(small_cnn()), 8, calib)
    np.testing.assert_array_equal(model.run(calib)["y"], ref.run(calib)["y"])
    assert model.quant_info["calibration_samples"] == len(calib)


def test_calibration_dict_with_wrong_names(calib):
    m = oxiquant.load(small_cnn())
    with pytest.raises(oxiquant.ShapeError, match=r"unknown: \['image'\].*missing: \['x'\]"):
        oxiquant.quantize_network(m, 8, [{"image": calib[:4]}])
    with pytest.raises(oxiquant.ShapeError, match="unknown"):
        oxiquant.quantize_network(m, 8, {"x": calib, "extra": calib})
    two = oxiquant.load(two_input_model())
    a = calib[:, :2, :6, :6].copy()
    with pytest.raises(oxiquant.ShapeError, match=r"missing: \['b'\]"):
        oxiquant.quantize_network(two, 8, {"a": a})
    with pytest.raises(oxiquant.ShapeError, match="2 inputs"):
        oxiquant.quantize_network(two, 8, a)
    assert m.quant_info["stage"] == "float" and two.quant_info["stage"] == "float"


def test_calibration_data_of_the_wrong_dtype(model, calib):
    with pytest.raises(oxiquant.ShapeError, match="int32"):
        oxiquant.quantize_network(model, 8, calib.astype(np.int32))
    # float64 is converted.
    q64 = oxiquant.quantize_network(model, 8, calib.astype(np.float64))
    q32 = oxiquant.quantize_network(model, 8, calib)
    np.testing.assert_array_equal(q64.run(calib)["y"], q32.run(calib)["y"])


def test_calibration_set_forms_give_identical_ranges(calib):
    forms = {
        "array": calib,
        "list of samples": list(calib),
        "list of batches": [calib[i : i + 7] for i in range(0, len(calib), 7)],
        "generator": (calib[i : i + 16] for i in range(0, len(calib), 16)),
        "dict": {"x": calib},
        "list of dict batches": [{"x": calib[:25]}, {"x": calib[25:]}],
        "tuple of samples": tuple(calib),
    }
    ranges, outputs = {}, {}
    for name, data in forms.items():
        m = oxiquant.load(small_cnn())
        steps_until(m, calib, "normalize_parameters")
        ranges[name] = oxiquant.compute_ranges(m, data, batch_size=10)
        assert m.quant_info["calibration_samples"] == len(calib), name
        oxiquant.adjust_ranges(m)
        oxiquant.normalize_activations(m)
        oxiquant.quantize_normalized_network(m, 8)
        outputs[name] = m.run(calib)["y"]
    for name in forms:
        assert ranges[name] == ranges["array"], name
        np.testing.assert_array_equal(outputs[name], outputs["array"], err_msg=name)


def test_two_input_model_calibration_forms(rng):
    a = rng.standard_normal((12, 2, 6, 6)).astype(np.float32)
    b = 3 * rng.standard_normal((12, 2, 6, 6)).astype(np.float32)
    forms = {
        "dict": {"a": a, "b": b},
        "list of dict batches": [{"a": a[:5], "b": b[:5]}, {"a": a[5:], "b": b[5:]}],
        "generator": ({"a": a[i : i + 4], "b": b[i : i + 4]} for i in range(0, 12, 4)),
    }
    proto = two_input_model()
    ref = ort_run(proto, {"a": a, "b": b})
    results = {}
    for name, data in forms.items():
        q = oxiquant.quantize_network(oxiquant.load(proto), 8, data)
        results[name] = (q.quant_info["activations"], q.run({"a": a, "b": b})["y"])
        assert sqnr_db(ref, results[name][1]) > 30, name
    for name in forms:
        assert results[name][0] == results["dict"][0], name
        np.testing.assert_array_equal(results[name][1], results["dict"][1])
    # Each input gets its own calibrated quantizer.
    inputs = {a["tensor"]: a["range"] for a in results["dict"][0] if a["role"] == "input"}
    assert len(inputs) == 2
    assert sorted(inputs.values()) == pytest.approx(sorted([float(np.abs(a).max()), float(np.abs(b).max())]))


# -- the one-liner is the steps ----------------------------------------------------------
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"clipping": "mse", "per_channel": True},
        {"clipping": "kl", "optimize_signs": True},
        {"clipping": "sigma4", "single_shift": True, "weight_bits": 6},
        {"per_channel": True, "weight_clipping": "mse", "dequantize_outputs": False},
        {"no_quant": True},
    ],
)
def test_steps_by_hand_equal_quantize_network(calib, opts):
    bits = 5
    # The weight-rounding passes the preset adds below 8 bits have their own step
    # (round_weights), compared with the one-liner in test_ptq_rounding.py.
    rounding_off = {"gptq": False, "bias_correction": False}
    q = oxiquant.quantize_network(oxiquant.load(small_cnn()), bits, calib, batch_size=8, **rounding_off, **opts)
    m = oxiquant.load(small_cnn())
    oxiquant.prepare_network(m)
    if not opts.get("no_quant"):
        # (It finds nothing to split in a CNN, and says so.)
        assert oxiquant.split_outlier_channels(m, calib, batch_size=8) == {}
    oxiquant.insert_scaling_nodes(m)
    # The steps' defaults are the one-liner's ("best" preset).
    oxiquant.normalize_parameters(m, per_channel=opts.get("per_channel", True))
    oxiquant.compute_ranges(m, calib, batch_size=8)
    oxiquant.adjust_ranges(
        m, clipping=opts.get("clipping", "mse"), nb_bits=bits, optimize_signs=opts.get("optimize_signs", True)
    )
    oxiquant.normalize_activations(m)
    oxiquant.quantize_normalized_network(
        m,
        bits,
        weight_bits=opts.get("weight_bits"),
        optimize_signs=opts.get("optimize_signs", True),
        single_shift=opts.get("single_shift", False),
        no_quant=opts.get("no_quant", False),
        dequantize_outputs=opts.get("dequantize_outputs", True),
        weight_clipping=opts.get("weight_clipping", "max"),
    )
    np.testing.assert_array_equal(m.run(calib)["y"], q.run(calib)["y"])
    assert m.quant_info == q.quant_info
    assert m.to_onnx().SerializeToString() == q.to_onnx().SerializeToString()


# -- quant_info ------------------------------------------------------------------------
@pytest.mark.parametrize("optimize_signs", [False, True])
def test_quant_info_fields(model, calib, optimize_signs):
    bits = 6
    q = oxiquant.quantize_network(model, bits, calib, optimize_signs=optimize_signs, clipping="mse")
    info = q.quant_info
    assert info["stage"] == "quantized" and info["dequantized_outputs"] and not info["no_quant"]
    assert info["calibration_samples"] == len(calib)
    acts = [a for a in info["activations"] if a["role"] != "dequant"]
    assert {a["role"] for a in acts} >= {"input", "affine", "branch", "merge"}
    for a in acts:
        assert a["bits"] == bits and a["clipping"] == "mse"
        assert a["step"] > 0 and np.isfinite(a["step"])
        assert 0 < a["clip"] <= a["range"] * (1 + 1e-6)
        assert a["min"] <= a["max"] and a["range"] == pytest.approx(max(abs(a["min"]), abs(a["max"])))
        half, full = 2 ** (bits - 1) - 1, 2**bits - 1
        assert a["codes"] == ([-half - 1, half] if a["signed"] else [0, full])
        # An unsigned input of a merge whose other input is signed keeps the signed unit
        # (its scale is code `half`); every other quantizer's scale is its top code.
        shared_unit = a["role"] == "branch" and not a["signed"]
        q_levels = half if a["signed"] or shared_unit else full
        assert a["step"] == pytest.approx(a["scale"] / q_levels, rel=1e-5)
        if not optimize_signs:
            assert a["signed"]
    if optimize_signs:
        # The Relu before the residual Add feeds it, so its branch can be unsigned; the
        # Gemm output (logits) cannot.
        assert any(not a["signed"] for a in acts)
        assert next(a for a in acts if a["tensor"] == "y")["signed"]
        # The residual Add's inputs share one step: the unsigned shortcut (after a Relu) and
        # the signed conv2 output.
        branch = next(a for a in acts if a["role"] == "branch")
        sibling = next(a for a in acts if a["name"] == "conv2_scaling")
        assert not branch["signed"] and sibling["signed"]
        assert branch["step"] == pytest.approx(sibling["step"], rel=1e-6)
    # The input quantizer's range is the calibration data's.
    inp = next(a for a in acts if a["role"] == "input")
    assert inp["range"] == pytest.approx(float(np.abs(calib).max()))
    names = {w["name"] for w in info["weights"]}
    assert names == {"conv1", "conv2", "fc"}
    for w in info["weights"]:
        assert w["weight_bits"] == bits and all(s > 0 for s in w["weight_scale"])
        assert w["weight_clip"] == [1.0] * len(w["weight_scale"])
    assert info["float_nodes"] == []


def test_quantized_model_is_close_to_float_and_exports(model, calib):
    ref = ort_run(small_cnn(), {"x": calib})
    for bits, floor_db in ((8, 30), (6, 20)):
        q = oxiquant.quantize_network(model, bits, calib)
        y = q.run(calib)["y"]
        assert sqnr_db(ref, y) > floor_db, bits
        np.testing.assert_allclose(ort_run(q.to_onnx(), {"x": calib}), y, rtol=1e-5, atol=1e-6 * np.abs(y).max())


# -- float islands and degenerate models -------------------------------------------------
@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_float_island_is_reported_and_the_model_still_quantizes(calib, op):
    proto = small_cnn(middle=op)
    ref = ort_run(proto, {"x": calib})
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, calib)
    info = q.quant_info
    assert [(n, o) for n, o, _ in info["float_nodes"]] == [("middle", op)]
    assert "scale-invariant" in info["float_nodes"][0][2]
    roles = {a["role"] for a in info["activations"]}
    assert {"dequant", "island_output"} <= roles
    y = q.run(calib)["y"]
    assert np.all(np.isfinite(y)) and sqnr_db(ref, y) > 25
    np.testing.assert_allclose(ort_run(q.to_onnx(), {"x": calib}), y, rtol=1e-5, atol=1e-6 * np.abs(y).max())
    # prepare_network alone lists it too.
    m = oxiquant.load(proto)
    oxiquant.prepare_network(m)
    assert [n for n, _, _ in m.quant_info["float_nodes"]] == ["middle"]


def test_trailing_softmax_stays_float(calib):
    proto = small_cnn()
    proto.graph.node[-1].output[0] = "logits"
    proto.graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], axis=1, name="softmax"))
    ref = ort_run(proto, {"x": calib})
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, calib)
    assert [n for n, _, _ in q.quant_info["float_nodes"]] == ["softmax"]
    # Only the Softmax reads the logits: the Gemm's accumulator goes to real values through a
    # dequantizer, not an 8-bit requantization.
    roles = {a["tensor"]: a["role"] for a in q.quant_info["activations"]}
    assert roles.get("logits") == "dequant", roles
    y = q.run(calib)["y"]
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    # The Softmax is exact on the quantized model's logits: |dp_i| <= sum_j |dp_i/dx_j| |dx_j|
    # and sum_j |dp_i/dx_j| = 2 p_i (1 - p_i) <= 1/2, so each sample's output moves by at most
    # half its largest logit error (the logits against onnxruntime's float ones).
    logits = onnx.ModelProto.FromString(proto.SerializeToString())
    logits.graph.output[0].name = "logits"
    del logits.graph.node[-1]
    err = np.abs(q.run(calib, fetch=["logits"])["logits"] - ort_run(logits, {"x": calib}))
    assert np.all(np.abs(y - ref).max(axis=1) <= 0.5 * err.max(axis=1) + 1e-6)
    np.testing.assert_allclose(ort_run(q.to_onnx(), {"x": calib}), y, rtol=1e-5, atol=1e-6)


def test_all_zero_weights_and_a_constant_zero_activation(calib):
    """conv1 has all-zero weights and bias: its output, the Relu and the residual branch are
    constantly 0 on any input. Quantizes with no NaN, says so in the warnings, and outputs
    what the float model does (the Gemm bias alone)."""
    proto = dead_conv_cnn()
    ref = ort_run(proto, {"x": calib})
    for opts in ({}, {"per_channel": True}, {"clipping": "mse"}, {"clipping": "kl"}, {"single_shift": True}):
        q = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, **opts)
        y = q.run(calib)["y"]
        assert np.all(np.isfinite(y)), opts
        np.testing.assert_allclose(y, ref, atol=0.02 * np.abs(ref).max(), err_msg=str(opts))
        assert any("constantly 0" in w for w in q.quant_info["warnings"]), opts
        # The dead branch of the Add must not set the scale of the live one (conv2's): it
        # keeps its own range, or the Add output is a handful of integer levels.
        c2 = next(a for a in q.quant_info["activations"] if a["tensor"] == "c2")
        assert c2["scale"] == pytest.approx(c2["clip"]), (opts, c2)
        for a in q.quant_info["activations"]:
            assert a["step"] is None or (np.isfinite(a["step"]) and a["step"] > 0), a
        exported = ort_run(q.to_onnx(), {"x": calib})
        assert np.all(np.isfinite(exported))


def test_model_without_any_weight(calib):
    # Relu -> MaxPool: only an input quantizer; outputs are integers times one step.
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
    ]
    proto = zoo.make_model(nodes, [VI("x", TensorProto.FLOAT, ["N", 3, 8, 8])], [VI("y", TensorProto.FLOAT, None)])
    # Max clipping: every input value is inside the quantizer's range.
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, calib, clipping="max")
    ref = ort_run(proto, {"x": calib})
    step = next(a["step"] for a in q.quant_info["activations"] if a["role"] == "input")
    y = q.run(calib)["y"]
    assert np.abs(y - ref).max() <= step / 2 * (1 + 1e-5)


@pytest.mark.parametrize("clipping", ["max", "mse", "kl"])
def test_the_batch_size_does_not_change_the_result(model, calib, clipping):
    """Histograms are merged exactly across batches: the clipping values, and so the
    quantized model, are the same whatever the batch size."""
    runs = [
        oxiquant.quantize_network(
            model, 4, calib, clipping=clipping, optimize_signs=True, batch_size=bs, progress=False
        )
        for bs in (len(calib), 7, 1)
    ]
    clips = [[layer["clip"] for layer in q.quant_info["activations"]] for q in runs]
    assert clips[1] == clips[0] and clips[2] == clips[0]
    outs = [q.run(calib)["y"] for q in runs]
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])


@pytest.mark.parametrize("clipping", ["max", "mse", "kl", "sigma3"])
def test_the_number_of_threads_does_not_change_the_result(model, calib, clipping):
    """Batches run side by side, one per thread, and their statistics merge in the order of
    the batches: every figure, sums included, is the same on 1, 2 or 3 threads (6 batches
    of 7: full groups, and a short last group on 4 threads)."""
    runs = [
        oxiquant.quantize_network(
            model, 4, calib, clipping=clipping, optimize_signs=True, batch_size=7, progress=False, num_threads=n
        )
        for n in (1, 2, 3, 4)
    ]
    infos = [q.quant_info for q in runs]
    for info in infos[1:]:
        assert info == infos[0]
    assert infos[0]["calibration_batches"] == 6 and infos[0]["calibration_samples"] == len(calib)
    for q in runs[1:]:
        np.testing.assert_array_equal(q.run(calib)["y"], runs[0].run(calib)["y"])


def test_calibration_ranges_are_the_largest_magnitudes_numpy_sees(calib):
    """Each Scaling node's range is max |x| of its output over every calibration sample,
    whichever group of batches the sample ran in (against onnxruntime running the same
    graph with every Scaling output fetched)."""
    m = oxiquant.load(small_cnn())
    oxiquant.prepare_network(m)
    oxiquant.insert_scaling_nodes(m)
    oxiquant.normalize_parameters(m)
    proto = m.to_onnx()
    oxiquant.compute_ranges(m, calib, batch_size=3, progress=False, num_threads=2)
    layers = [layer for layer in m.quant_info["activations"] if layer["stats"] is not None]
    tensors = {layer["name"]: layer["tensor"] for layer in layers}
    # In the graph's units (the range in real units is this times the node's scale).
    ranges = {layer["name"]: layer["stats"]["max_abs"] for layer in layers}
    outs = [o.name for o in proto.graph.output]
    for name in tensors.values():
        if name not in outs:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    fetched = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": calib})))
    for node, r in ranges.items():
        assert r == pytest.approx(float(np.abs(fetched[tensors[node]]).max()), rel=1e-5), node


def test_calibration_progress_bar_counts_every_batch(model, calib, monkeypatch):
    """The bar advances as groups of batches finish, to the total it announced."""
    import tqdm.auto

    bars = []

    class Recorder:
        def __init__(self, total=None, desc=None, **_):
            self.total, self.desc, self.done, self.closed = total, desc, [], False
            bars.append(self)

        def update(self, n):
            self.done.append(n)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    steps_until(model, calib, "normalize_parameters")
    oxiquant.compute_ranges(model, calib, batch_size=7, progress=True, num_threads=4)
    [bar] = bars
    assert (bar.desc, bar.total, bar.done, bar.closed) == ("calibration", 6, [4, 2], True)
    oxiquant.compute_ranges(model, calib, batch_size=7, progress=False)
    assert len(bars) == 1


def test_sigma_clipping_depends_on_the_batch_size_only_by_float_summation(model, calib):
    runs = [
        oxiquant.quantize_network(model, 4, calib, clipping="sigma3", batch_size=bs, progress=False)
        for bs in (len(calib), 7)
    ]
    a, b = ([layer["clip"] for layer in q.quant_info["activations"]] for q in runs)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_calibration_without_histograms(model, calib):
    """histograms=False keeps what MAX and SIGMA need; MSE and KL then refuse clearly."""
    a, b = model.copy(), model.copy()
    for m, hist in ((a, True), (b, False)):
        oxiquant.prepare_network(m)
        oxiquant.insert_scaling_nodes(m)
        oxiquant.normalize_parameters(m)
        oxiquant.compute_ranges(m, calib, progress=False, histograms=hist)
    with pytest.raises(oxiquant.InvalidArgumentError, match="histograms"):
        oxiquant.adjust_ranges(b, "mse", 8)
    for clipping in ("max", "sigma3"):
        assert oxiquant.adjust_ranges(a, clipping, 4) == pytest.approx(oxiquant.adjust_ranges(b, clipping, 4))


# -- presets ---------------------------------------------------------------------------
def test_presets_fill_in_what_is_not_given(model, calib):
    best = oxiquant.quantize_network(model, 8, calib, progress=False)
    info = best.quant_info
    assert info["per_channel"] is True
    assert {a["clipping"] for a in info["activations"] if a["clip"] is not None} == {"mse"}
    assert any(a["step"] and not a["signed"] for a in info["activations"])  # a Relu output, unsigned
    # "aidge" is the seed's settings, exactly.
    aidge = oxiquant.quantize_network(model, 8, calib, preset="aidge", progress=False)
    seed = oxiquant.quantize_network(
        model, 8, calib, clipping="max", per_channel=False, optimize_signs=False, split_channels=False, progress=False
    )
    assert aidge.quant_info == seed.quant_info
    name = model.output_names[0]
    np.testing.assert_array_equal(aidge.run(calib)[name], seed.run(calib)[name])
    assert all(a["signed"] for a in aidge.quant_info["activations"] if a["step"])
    # An explicit argument wins over the preset.
    q = oxiquant.quantize_network(model, 8, calib, preset="aidge", per_channel=True, progress=False)
    assert q.quant_info["per_channel"] is True
    with pytest.raises(oxiquant.InvalidArgumentError, match="preset must be 'best' or 'aidge'"):
        oxiquant.quantize_network(model, 8, calib, preset="fast")

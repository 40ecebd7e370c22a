"""Properties of the PTQ pipeline on random networks (ptq_graphs.networks), checked against
independent references: onnxruntime on the original float model, and numpy.

Profiles (tests/conftest.py): "ci" (default, 25 examples per test) and "long" (300):
HYPOTHESIS_PROFILE=long python -m pytest tests/ptq/test_ptq_properties.py
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import oxiquant

import ptq_graphs
import reference
from reference import RTOL, assert_close, ort_run, sqnr_db

N_CALIB = 16


def output_scale(m: oxiquant.Model, name: str = "y") -> float:
    s = m._native.ptq_scales().get(name, [1.0])
    assert len(s) == 1, f"output '{name}' has a per-channel scale {s}"
    return float(s[0])


def assert_export_matches(m: oxiquant.Model, x: np.ndarray, what: str, rtol: float = RTOL) -> None:
    """The exported ONNX model runs in onnxruntime and agrees with oxiquant's engine."""
    exported = m.to_onnx()
    onnx.checker.check_model(exported)
    assert_close(ort_run(exported, x)["y"], m.run(x)["y"], f"{what}: onnxruntime on the export vs m.run", rtol)


def normalized_tensors(m: oxiquant.Model, proto: onnx.ModelProto) -> list[str]:
    """The tensors that lie in [-1, 1] on the calibration data after normalize_activations
    (MAX): the outputs of the calibrated Scaling nodes, except that a Scaling node read only
    by Clips has its range capped at their bounds, and then it is the Clips' outputs."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in proto.graph.output}
    tensors = []
    for a in m.quant_info["activations"]:
        if a["role"] == "dequant":
            continue
        t = a["tensor"]
        clips = readers.get(t, [])
        if t not in outputs and clips and all(n.op_type == "Clip" and n.input[0] == t for n in clips):
            assert a["clip"] <= a["range"] * (1 + 1e-6), a
            tensors += [n.output[0] for n in clips]
        else:
            assert a["clip"] == a["range"], f"MAX clipping changed the range of '{t}': {a}"
            tensors.append(t)
    return tensors


def affine_weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Conv/Gemm/MatMul weights of an exported model, one row per output channel, keyed by
    (node name, op type)."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    out = {}
    for n in proto.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in inits:
            w = inits[n.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            rows = w if n.op_type == "Conv" or trans_b else w.T
            out[n.name, n.op_type] = rows.reshape(rows.shape[0], -1)
    return out


def calibration(model: onnx.ModelProto, seed: int = 1234) -> np.ndarray:
    return ptq_graphs.calibration_data(model, np.random.default_rng(seed), N_CALIB)


# -- regression examples (bugs these tests found) -----------------------------------------
def _model(nodes, inits, c_out=3) -> onnx.ModelProto:
    """Input [N, 2, 6, 6], output y of [N, c_out, 6, 6]."""
    graph = helper.make_graph(
        nodes,
        "example",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c_out, 6, 6])],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def relu6_after_a_wide_conv() -> onnx.ModelProto:
    """Conv with large weights (outputs up to ~1000) -> Clip(0, 6) -> Conv. The quantizer
    in front of the Clip used the Conv's whole range, so [0, 6] fell within one step and the
    Clip's integer bounds rounded to [0, 0]: a constant output at any bit width."""
    g = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = {
        "w1": 300 * g.uniform(-1, 1, (4, 2, 3, 3)),
        "b1": g.uniform(-1, 1, 4),
        "lo": np.array(0.0),
        "hi": np.array(6.0),
        "w2": g.uniform(-1, 1, (3, 4, 1, 1)),
    }
    return _model(nodes, inits)


def dead_branch_into_an_add() -> onnx.ModelProto:
    """Add(Relu(Conv with all-zero weights), Conv(x)): the zero branch kept an arbitrary
    scale (its input's) and the Add balanced the live branch up to it, leaving the live
    branch a few integer levels."""
    g = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["r0", "c1"], ["y"]),
    ]
    return _model(nodes, {"w0": np.zeros((3, 2, 1, 1)), "w1": 0.01 * g.uniform(-1, 1, (3, 2, 3, 3))})


def input_only_sqnr_db(proto: onnx.ModelProto, x: np.ndarray, ref: np.ndarray, bits: int) -> float:
    """SQNR of the float model (onnxruntime) fed the input rounded to `bits` (symmetric, max
    range, in numpy): the error no quantized model can avoid, since every one quantizes its
    input."""
    top = 2 ** (bits - 1) - 1
    step = np.abs(x).max() / top
    xq = (np.clip(np.round(x / step), -top, top) * step).astype(np.float32)
    return sqnr_db(ref, ort_run(proto, xq)["y"])


def test_regression_examples_quantize_well():
    """The two bugs above, measured against the error of quantizing the input alone (an
    independent reference). relu6_after_a_wide_conv: the 300x weights amplify the input's
    rounding and the Clip turns it into 0 <-> 6 flips, about 22 dB at 8 bits; the quantizers
    after the input add little, so the model must come within 3 dB of it (the bug gave a
    constant output, about 0 dB). dead_branch_into_an_add: input, weight and output
    quantization add comparable noise (three sources: about 5 dB below the input's alone);
    the bug left the live branch a few integer levels."""
    for proto, margin_db in ((relu6_after_a_wide_conv(), 3.0), (dead_branch_into_an_add(), 6.0)):
        x = calibration(proto, seed=7)
        ref = ort_run(proto, x)["y"]
        floor_db = input_only_sqnr_db(proto, x, ref, 8) - margin_db
        for per_channel in (False, True):
            q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, per_channel=per_channel)
            got = sqnr_db(ref, q.run(x)["y"])
            assert got > floor_db, f"{proto.graph.node[1].op_type}: 8-bit SQNR {got:.1f} dB < {floor_db:.1f}"


# -- the float steps preserve the function ---------------------------------------------
# No float islands here: the tolerance is relative to the output's magnitude, and a Softmax
# or Sigmoid after values of 1e4 (degenerate weights) turns their f32 rounding (a relative
# 6e-8) into an absolute error of its output (fresh draws: 5e-4 of a Softmax output of 1).
@given(ptq_graphs.networks(islands=False), st.booleans())
@example(relu6_after_a_wide_conv(), False)
@example(dead_branch_into_an_add(), True)
def test_float_steps_preserve_the_function(proto, per_channel):
    x = calibration(proto)
    ref = ort_run(proto, x)["y"]
    m = oxiquant.load(proto)
    assert_close(m.run(x)["y"], ref, "loaded model")

    oxiquant.prepare_network(m)
    assert_close(m.run(x)["y"], ref, "after prepare_network")
    assert_export_matches(m, x, "after prepare_network")
    assert not any(n.op_type == "BatchNormalization" for n in m.to_onnx().graph.node), "a BatchNorm was not folded"

    before = m.run(x)["y"]
    oxiquant.insert_scaling_nodes(m)
    after = m.run(x)["y"]
    np.testing.assert_array_equal(after, before, err_msg="insert_scaling_nodes changed the outputs")
    assert_export_matches(m, x, "after insert_scaling_nodes")

    oxiquant.normalize_parameters(m, per_channel=per_channel)
    assert_close(m.run(x)["y"] * output_scale(m), ref, "after normalize_parameters (times the output scale)")
    assert_export_matches(m, x, "after normalize_parameters")
    for (node, op), w in affine_weights(m.to_onnx()).items():
        peak = np.abs(w).max(axis=1)
        assert peak.max() <= 1.0, f"weight of '{node}' is not in [-1, 1]: max |W| = {peak.max()}"
        # ... and normalized: max |W| is 1 per tensor (per channel with per_channel; a
        # MatMul keeps one scale, its channels being the last axis), or the weights are all
        # zero.
        tops = peak if per_channel and op != "MatMul" else peak.max(keepdims=True)
        assert np.all((tops == 0) | (np.abs(tops - 1) < 1e-6)), f"'{node}': max |W| {tops}"

    oxiquant.compute_ranges(m, x, batch_size=5)
    # Signed MAX clipping: every range is kept whole, so every Scaling output lies in [-1, 1].
    oxiquant.adjust_ranges(m, clipping="max", optimize_signs=False)
    oxiquant.normalize_activations(m)
    assert_close(m.run(x)["y"] * output_scale(m), ref, "after normalize_activations (times the output scale)")
    assert_export_matches(m, x, "after normalize_activations")
    # On the calibration data every Scaling node output lies in [-1, 1] (MAX clipping).
    exported = m.to_onnx()
    tensors = normalized_tensors(m, exported)
    values = ort_run(exported, x, tensors)
    for t in tensors:
        peak = float(np.abs(values[t]).max())
        assert peak <= 1.0 + RTOL, f"Scaling output '{t}' reaches {peak} on the calibration data"

    oxiquant.quantize_normalized_network(m, 8, no_quant=True, dequantize_outputs=True, optimize_signs=False)
    assert_close(m.run(x)["y"], ref, "after quantize_normalized_network(no_quant=True)")
    assert_export_matches(m, x, "after quantize_normalized_network(no_quant=True)")


# -- quantization -----------------------------------------------------------------------
QUANT_OPTIONS = st.fixed_dictionaries(
    {
        "clipping": st.sampled_from(["max", "mse", "kl", "sigma3", "sigma5"]),
        "per_channel": st.booleans(),
        "optimize_signs": st.booleans(),
        "single_shift": st.booleans(),
        "weight_clipping": st.sampled_from(["max", "mse"]),
        "weight_bits": st.none() | st.integers(2, 8),
    }
)


@given(ptq_graphs.networks(), st.integers(2, 16), QUANT_OPTIONS)
@example(relu6_after_a_wide_conv(), 8, {"optimize_signs": True})
@example(dead_branch_into_an_add(), 4, {"per_channel": True, "single_shift": True, "clipping": "mse"})
def test_quantized_outputs_are_integers_in_range(proto, bits, opts):
    """Quantizing a valid network never fails, whatever the options; before dequantization
    the output is made of integers of the activation width."""
    x = calibration(proto)
    q = oxiquant.quantize_network(oxiquant.load(proto), bits, x, dequantize_outputs=False, **opts)
    y = q.run(x)["y"]
    assert np.all(np.isfinite(y))
    acts = [a for a in q.quant_info["activations"] if a["role"] != "dequant"]
    # A trailing float island (a Softmax head) outputs real values that nothing quantizes.
    if not ptq_graphs.ends_in_float_island(q, proto):
        np.testing.assert_array_equal(y, np.round(y), err_msg="a quantized output is not an integer")
        # The range is the output quantizer's, read from its `signed` flag (not from the data):
        # signed ones use the two's complement range [-2^(n-1), 2^(n-1) - 1] (what ONNX
        # int8/int4 saturate to, so that the QDQ export is exact), unsigned ones [0, 2^n - 1].
        for out_q in output_quantizers(q):
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if out_q["signed"] else (0, 2**bits - 1)
            assert lo <= y.min() and y.max() <= hi, f"{out_q['name']}: {bits}-bit output reaches {y.min()}..{y.max()}"
    acts = [a for a in q.quant_info["activations"] if a["role"] != "dequant"]
    assert all(a["bits"] == bits and a["step"] > 0 for a in acts)
    # (The "best" preset optimizes the signs when the option is not given.)
    if opts.get("optimize_signs") is False:
        assert all(a["signed"] for a in acts)


def output_quantizers(q: oxiquant.Model, output: str = "y") -> list[dict]:
    """The quantizers whose values reach `output` through ops that pass them on unchanged
    (Relu, pools, Concat, reshapes), found in the fake export (quantizer `n` ends in the Clip
    node `n_clip`)."""
    proto = q.to_onnx("fake")
    producer = {o: n for n in proto.graph.node for o in n.output}
    by_name = {a["name"]: a for a in q.quant_info["activations"]}
    found, todo = [], [output]
    while todo:
        n = producer.get(todo.pop())
        if n is None:
            continue
        if n.op_type == "Clip" and n.name.endswith("_clip") and n.name[: -len("_clip")] in by_name:
            found.append(by_name[n.name[: -len("_clip")]])
        elif n.op_type in ("Relu", "LeakyRelu", "MaxPool", "Flatten", "Reshape", "Concat", "Clip", "Identity", "Pad"):
            todo += n.input[:1] if n.op_type != "Concat" else list(n.input)
        elif n.op_type in ("AveragePool", "GlobalAveragePool", "Round"):
            todo.append(n.input[0])
    assert found, "no quantizer reaches the output"
    return found


@given(
    ptq_graphs.networks(exact_sums=True),
    st.integers(2, 8),
    QUANT_OPTIONS,
    st.sampled_from(ptq_graphs.INPUT_KINDS),
)
@example(relu6_after_a_wide_conv(), 8, {"optimize_signs": True}, "normal")
def test_fake_export_is_the_engine(proto, bits, opts, kind):
    """Where every f32 sum is exact (operands of up to 8 bits, `sum |W| * max |x| + |bias|`
    below 2^24: `exact_sums` networks, the rest counted by `assume`), onnxruntime on the fake
    export computes the engine's integers."""
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(1234), N_CALIB, kind=kind)
    q = oxiquant.quantize_network(oxiquant.load(proto), bits, x, dequantize_outputs=False, **opts)
    exact = reference.integer_sum_bound(q.to_onnx("fake")) < reference.EXACT_F32
    event("f32 sums exact" if exact else "f32 sums past 2^24: not checkable")
    assume(exact and not ptq_graphs.ends_in_float_island(q, proto))
    assert_fake_export_is_the_engine(q, x, q.run(x)["y"])


def assert_fake_export_is_the_engine(q: oxiquant.Model, x: np.ndarray, y: np.ndarray) -> None:
    """The "fake" export means what the engine computes: onnxruntime running it with the
    quantizer products taken exactly (in double) gives the engine's output `y` bit for bit,
    and running it as written (f32 products, rounded before Round: a tie can flip, and the
    layers after it multiply the step) gives what oxiquant gives when it loads the file."""
    exported = q.to_onnx()
    exact = ort_run(ptq_graphs.with_exact_quantizer_products(exported), x)["y"]
    np.testing.assert_array_equal(exact, y, err_msg="onnxruntime, exact quantizer products, vs the engine")
    as_written = ort_run(exported, x)["y"]
    np.testing.assert_array_equal(
        as_written, oxiquant.load(exported).run(x)["y"], err_msg="onnxruntime vs oxiquant on the exported file"
    )


def sqnr_gain_db(proto: onnx.ModelProto, per_channel: bool, low: int = 8, high: int = 12) -> float | None:
    """SQNR(high bits) - SQNR(low bits) of the dequantized output against the float one, or
    None for a (nearly) constant output, which sits within a step or two at any width: a large
    bias with a small input-dependent part has no signal to measure."""
    x = calibration(proto, seed=7)
    ref = ort_run(proto, x)["y"]
    if np.std(ref) <= 0.1 * np.abs(ref).max():
        return None
    s = {}
    for bits in (low, high):
        q = oxiquant.quantize_network(oxiquant.load(proto), bits, x, per_channel=per_channel, clipping="max")
        y = q.run(x)["y"]
        assert y.shape == ref.shape and np.all(np.isfinite(y))
        s[bits] = sqnr_db(ref, y)
    if np.isinf(s[high]):
        # Nothing quantized at either width (a network of float islands alone): no gain to
        # measure.
        return np.inf if np.isfinite(s[low]) else None
    return s[high] - s[low]


@given(st.lists(st.tuples(ptq_graphs.networks(degenerate=False), st.booleans()), min_size=4, max_size=4))
@example([(relu6_after_a_wide_conv(), False), (relu6_after_a_wide_conv(), True)])
@example([(dead_branch_into_an_add(), False), (dead_branch_into_an_add(), True)])
def test_sqnr_grows_with_the_bit_width(cases):
    """In the high-resolution regime every quantizer's noise power falls by 4^k with k more
    bits (its step halves per bit; max clipping keeps the ranges fixed), and the output noise
    is a fixed combination of them: 4 more bits buy 24 dB. Asked from 8 to 12 bits (4 bits is
    not high resolution: weights round to 0 and the gain there ranges widely), as more than
    18 dB on average over a few networks, the margin for the noise floors below the quantizers'
    (the f32 arithmetic of the fake graph at 12 bits, a per-tensor weight scale that rounds a
    small but decisive weight to 0 at any width)."""
    gains = [g for g in (sqnr_gain_db(p, pc) for p, pc in cases) if g is not None]
    event(f"networks measured: {len(gains)}")  # --hypothesis-show-statistics: none is trivial
    if gains:
        mean = float(np.mean(np.clip(gains, -30.0, 30.0)))
        event(f"mean gain, 3 dB bins: {int(mean // 3) * 3}")
        assert mean > 18.0, f"SQNR gains from 8 to 12 bits: {np.round(gains, 1)} dB (mean of the clipped {mean:.1f})"


@given(ptq_graphs.networks(), st.sampled_from(["max", "mse", "kl", "sigma3"]), st.booleans())
def test_quantize_network_leaves_its_input_alone(proto, clipping, per_channel):
    x = calibration(proto)
    m = oxiquant.load(proto)
    before_out = m.run(x)["y"]
    before_onnx = m.to_onnx().SerializeToString()
    q = oxiquant.quantize_network(m, 8, x, clipping=clipping, per_channel=per_channel)
    assert q is not m and q._native is not m._native
    assert q.is_quantized and not m.is_quantized
    assert m.quant_info["stage"] == "float"
    np.testing.assert_array_equal(m.run(x)["y"], before_out)
    assert m.to_onnx().SerializeToString() == before_onnx
    y = q.run(x)["y"]
    assert y.shape == before_out.shape and np.all(np.isfinite(y))


# -- idempotence, round trips ---------------------------------------------------------------
def _canonical(m: oxiquant.Model) -> bytes:
    return m.to_onnx().SerializeToString()


@given(ptq_graphs.networks())
def test_constant_folding_is_idempotent(proto):
    """Folding is done at load; folding again changes nothing, and prepare_network (which
    folds too) gives the same graph whether or not the model was folded at load."""
    x = calibration(proto)
    m = oxiquant.load(proto)
    once = _canonical(m)
    assert m._native.fold_constants() == 0
    assert _canonical(m) == once
    unfolded = oxiquant.load(proto, fold_constants=False)
    oxiquant.prepare_network(m)
    oxiquant.prepare_network(unfolded)
    assert _canonical(unfolded) == _canonical(m)
    np.testing.assert_array_equal(unfolded.run(x)["y"], m.run(x)["y"])


@given(ptq_graphs.networks(), st.sampled_from(["max", "mse", "kl", "sigma3"]), st.integers(2, 8))
def test_repeatable_steps_are_idempotent(proto, clipping, bits):
    """compute_ranges and adjust_ranges may run again; twice with the same arguments is
    the same as once (same ranges, clipping values and final network). The structural
    steps refuse a second run and leave the model unchanged."""
    x = calibration(proto)
    m = oxiquant.load(proto)
    oxiquant.prepare_network(m)
    with pytest.raises(oxiquant.InvalidArgumentError, match="prepare_network.*past this step"):
        oxiquant.prepare_network(m)
    oxiquant.insert_scaling_nodes(m)
    oxiquant.normalize_parameters(m)
    before = (_canonical(m), repr(m.quant_info))
    with pytest.raises(oxiquant.InvalidArgumentError, match="normalize_parameters.*past this step"):
        oxiquant.normalize_parameters(m)
    assert (_canonical(m), repr(m.quant_info)) == before
    first = oxiquant.compute_ranges(m, x, batch_size=7)
    assert oxiquant.compute_ranges(m, x, batch_size=7) == first
    clips = oxiquant.adjust_ranges(m, clipping=clipping, nb_bits=bits)
    info = repr(m.quant_info)
    assert oxiquant.adjust_ranges(m, clipping=clipping, nb_bits=bits) == clips
    assert repr(m.quant_info) == info
    oxiquant.normalize_activations(m)
    oxiquant.quantize_normalized_network(m, bits)
    # The steps above leave out round_weights, which the preset adds below 8 bits.
    ref = oxiquant.quantize_network(
        oxiquant.load(proto), bits, x, clipping=clipping, batch_size=7, gptq=False, bias_correction=False
    )
    np.testing.assert_array_equal(m.run(x)["y"], ref.run(x)["y"])


@given(proto=ptq_graphs.networks(exact_sums=True), quantized=st.booleans())
def test_save_and_load_round_trip(proto, quantized, tmp_path_factory):
    """A saved model (float or fake-quantized) loads back into the same function, and
    onnxruntime agrees with it. A fake-quantized file computes its quantizers' products in
    f32 as written (the engine takes them exactly): a product within an ulp of a tie rounds
    the other way, one step that the layers after it multiply (`reference.step_bound`);
    oxiquant and onnxruntime running the file compute the same thing, bit for bit, where
    every f32 sum is exact (`assume`d)."""
    x = calibration(proto)
    m = oxiquant.load(proto)
    if quantized:
        m = oxiquant.quantize_network(m, 6, x, per_channel=True, dequantize_outputs=False)
    path = m.save(tmp_path_factory.mktemp("rt") / "m.onnx")
    back = oxiquant.load(path)
    got = ort_run(onnx.load(str(path)), x)["y"]
    if quantized:
        exact = reference.integer_sum_bound(onnx.load(str(path))) < reference.EXACT_F32
        event("f32 sums exact" if exact else "f32 sums past 2^24: not checkable")
        assume(exact)
        want = m.run(x)["y"]
        bound = reference.step_bound(onnx.load(str(path)))
        assert np.abs(back.run(x)["y"] - want).max() <= bound * (1 + 1e-6) + 1e-6 * float(np.abs(want).max())
        if ptq_graphs.ends_in_float_island(m, proto):
            assert_close(got, back.run(x)["y"], "onnxruntime on the saved file", rtol=1e-6)
        else:
            np.testing.assert_array_equal(got, back.run(x)["y"])
    else:
        np.testing.assert_array_equal(back.run(x)["y"], m.run(x)["y"])
        assert_close(got, m.run(x)["y"], "onnxruntime on the saved file")

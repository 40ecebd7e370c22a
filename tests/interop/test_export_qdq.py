"""QDQ export: the quantized model as QuantizeLinear/DequantizeLinear ONNX, run by
onnxruntime (the independent reference) and compared with oxiquant's own run."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

import oxiquant

import ptq_graphs
import reference
from ptq_graphs import networks, small_cnn, tiny_weights_large_bias, two_input_model


def ort_session(proto: onnx.ModelProto, optimized_path: str | None = None, fused: bool = True) -> ort.InferenceSession:
    """`fused=False` keeps onnxruntime to the QDQ graph as written (DequantizeLinear, float
    op, QuantizeLinear: the ONNX semantics); `fused=True` lets it fuse the patterns into its
    integer kernels (QLinearConv, QLinearAdd ...)."""
    opts = ort.SessionOptions()
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def check_agrees(
    q: oxiquant.Model,
    feeds: dict[str, np.ndarray],
    name: str = "y",
    fused: bool = False,
    weight_type: str = "uint8",
    bound: float = 1.0,
    integer_output: bool = True,
) -> onnx.ModelProto:
    """`q` was quantized with dequantize_outputs=False: its outputs are integers, and the
    exported model must give the same ones in onnxruntime (one LSB of slack for a rounding
    tie flipped by computing x / (1/f) instead of x * f: enough for the fixed models here,
    whose layers after a flip have a gain below one step; generated networks pass
    `bound=reference.step_bound(...)`, the flip times the gains after it).

    With `fused=True` onnxruntime runs its own integer kernels. With uint8 weights (zero
    point 128) they widen u8 x u8 pairs to 16 bits: exact. With int8 weights, its AVX2
    kernels without VNNI sum u8 x s8 pairs into a saturating int16, which 8-bit weights can
    overflow (onnxruntime's `reduce_range` issue)."""
    proto = q.to_onnx("qdq", weight_type=weight_type)
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    # (A network of float islands alone quantizes nothing: no integer op reads any value.)
    if any(a["role"] != "dequant" for a in q.quant_info["activations"]):
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    want = {
        "uint8": {onnx.TensorProto.UINT8},
        "int8": {onnx.TensorProto.INT8},
        "auto": {onnx.TensorProto.UINT8, onnx.TensorProto.INT8},
    }[weight_type] | {onnx.TensorProto.INT4}
    weights = [i for i in proto.graph.initializer if i.data_type in want and len(i.dims) > 1]
    assert weights or not q.quant_info["weights"], f"the weights should be {weight_type} initializers"
    ref = ort_session(proto, fused=fused).run([name], feeds)[0]
    got = q.run(feeds)[name]
    if integer_output:
        np.testing.assert_array_equal(got, np.round(got))
    # (+ f32 rounding, for an output written by a float island)
    assert np.abs(ref - got).max() <= bound * (1 + 1e-6) + 1e-6 * float(np.abs(got).max())
    return proto


@pytest.fixture
def calib(rng):
    return rng.standard_normal((48, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"per_channel": True},
        {"per_channel": True, "optimize_signs": True},
        {"per_channel": True, "optimize_signs": True, "clipping": "mse"},
        {"optimize_signs": True, "clipping": "kl", "single_shift": True},
        {"per_channel": True, "weight_clipping": "mse"},
    ],
)
def test_qdq_export_runs_in_onnxruntime_and_agrees(calib, opts):
    q = oxiquant.quantize_network(
        oxiquant.load(small_cnn()), 8, calib, dequantize_outputs=False, progress=False, **opts
    )
    check_agrees(q, {"x": calib})


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_narrow_widths_export_with_int4_weights_and_clamped_activations(calib, bits):
    """Weights of 4 bits or fewer are int4 tensors (opset 21); activations keep 8-bit
    containers with a Clip to their range (onnxruntime's optimizer fails on int4 ones)."""
    q = oxiquant.quantize_network(
        oxiquant.load(small_cnn()),
        bits,
        calib,
        per_channel=True,
        optimize_signs=True,
        dequantize_outputs=False,
        progress=False,
    )
    proto = check_agrees(q, {"x": calib})
    types = {i.data_type for i in proto.graph.initializer}
    assert (onnx.TensorProto.INT4 in types) == (bits <= 4)
    assert proto.opset_import[0].version == (21 if bits <= 4 else 13)
    assert any(n.op_type == "Clip" for n in proto.graph.node)
    check_agrees(q, {"x": calib}, fused=True)


def test_4_bit_weights_with_8_bit_activations(calib):
    q = oxiquant.quantize_network(
        oxiquant.load(small_cnn()), 8, calib, weight_bits=4, dequantize_outputs=False, progress=False
    )
    proto = q.to_onnx("qdq")
    w4 = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT4 and len(i.dims) > 1]
    assert w4, "the 4-bit weights should be int4 initializers"
    got = ort_session(proto, fused=False).run(["y"], {"x": calib})[0]
    assert np.abs(got - q.run(calib)["y"]).max() <= 1.0


def test_two_input_model(rng):
    a = rng.standard_normal((16, 2, 6, 6)).astype(np.float32)
    b = rng.standard_normal((16, 2, 6, 6)).astype(np.float32)
    q = oxiquant.quantize_network(
        oxiquant.load(two_input_model()), 8, {"a": a, "b": b}, dequantize_outputs=False, progress=False
    )
    check_agrees(q, {"a": a, "b": b})


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("signs", [False, True])
def test_onnxruntime_integer_kernels_agree_with_8_bit_uint8_weights(calib, tmp_path, per_channel, signs):
    q = oxiquant.quantize_network(
        oxiquant.load(small_cnn()),
        8,
        calib,
        per_channel=per_channel,
        optimize_signs=signs,
        dequantize_outputs=False,
        progress=False,
    )
    check_agrees(q, {"x": calib}, fused=True)
    out = tmp_path / "optimized.onnx"
    ort_session(q.to_onnx("qdq"), str(out)).run(None, {"x": calib})
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    # Every convolution and merge runs as an onnxruntime integer kernel.
    assert {"QLinearConv", "QLinearAdd"} <= ops and "Conv" not in ops, sorted(ops)


def test_auto_weight_type_is_int8_only_where_onnxruntime_is_exact(calib):
    """The default weight type: int8 for 7-bit weights (onnxruntime's u8 x s8 kernels, exact on
    them on every CPU), uint8 for 8-bit ones; both exports give the engine's integers."""
    m = oxiquant.load(small_cnn())
    for bits, want in ((7, onnx.TensorProto.INT8), (8, onnx.TensorProto.UINT8)):
        q = oxiquant.quantize_network(
            m, 8, calib, weight_bits=bits, per_channel=True, dequantize_outputs=False, progress=False
        )
        for fmt in ("qdq", "qoperator"):
            types = {i.data_type for i in q.to_onnx(fmt).graph.initializer if len(i.dims) > 1}
            assert types == {want}, (bits, fmt, types)
        check_agrees(q, {"x": calib}, fused=True, weight_type="auto")
    with pytest.raises(oxiquant.InvalidArgumentError, match="'auto', 'uint8' or 'int8'"):
        q.to_onnx("qdq", weight_type="u8")


def test_int8_weights_agree_with_7_bit_weights(calib):
    q = oxiquant.quantize_network(
        oxiquant.load(small_cnn()), 8, calib, weight_bits=7, per_channel=True, dequantize_outputs=False, progress=False
    )
    check_agrees(q, {"x": calib}, fused=True, weight_type="int8")
    with pytest.raises(oxiquant.InvalidArgumentError, match="weight_type"):
        q.to_onnx("qdq", weight_type="int4")


def test_qdq_needs_a_quantized_model(calib):
    m = oxiquant.load(small_cnn())
    with pytest.raises(oxiquant.InvalidArgumentError, match="quantized model"):
        m.to_onnx("qdq")
    nq = oxiquant.quantize_network(m, 8, calib, no_quant=True, progress=False)
    with pytest.raises(oxiquant.InvalidArgumentError, match="no_quant"):
        nq.to_onnx("qdq")
    wide = oxiquant.quantize_network(m, 12, calib, progress=False)
    with pytest.raises(oxiquant.InvalidArgumentError, match="up to 8"):
        wide.to_onnx("qdq")
    with pytest.raises(oxiquant.InvalidArgumentError, match="format"):
        wide.to_onnx("qoperator-typo")


@pytest.mark.parametrize("dequantize", [False, True])
@pytest.mark.parametrize("opts", [{}, {"per_channel": True, "optimize_signs": True}, {"clipping": "mse"}])
def test_saved_qdq_file_loads_back(calib, tmp_path, opts, dequantize):
    """The saved QDQ file is valid ONNX, loads back into oxiquant's integer engine with the
    same outputs (export and import lose nothing), and onnxruntime running the file agrees
    with both (one step of slack for a tie its f32 division x / s can flip)."""
    q = oxiquant.quantize_network(
        oxiquant.load(small_cnn()), 8, calib, dequantize_outputs=dequantize, progress=False, **opts
    )
    path = q.save(tmp_path / "q.onnx", format="qdq")
    onnx.checker.check_model(str(path))
    back = oxiquant.load(path)
    assert back.engine == "int", back.engine_note
    want = q.run(calib)["y"]
    np.testing.assert_array_equal(back.run(calib)["y"], want)
    ref = ort_session(onnx.load(str(path)), fused=False).run(["y"], {"x": calib})[0]
    step = 1.0 if not dequantize else next(a["step"] for a in q.quant_info["activations"] if a["tensor"] == "y")
    assert np.abs(ref - want).max() <= step * (1 + 1e-6)


@settings(max_examples=reference.examples(25), deadline=None)
@given(
    net=networks(max_blocks=3),
    seed=st.integers(0, 2**16),
    bits=st.integers(2, 8),
    per_channel=st.booleans(),
    optimize_signs=st.booleans(),
)
@example(net=tiny_weights_large_bias(), seed=0, bits=8, per_channel=False, optimize_signs=False)
def test_generated_networks_export_and_agree(net, seed, bits, per_channel, optimize_signs):
    """Random networks, degenerate weights included (all-zero channels and layers, 1e-8 and
    1e4 magnitudes), at every width the QDQ format holds."""
    m = oxiquant.load(net)
    shape = [d.dim_value or 4 for d in net.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal([8, *shape[1:]]).astype(np.float32)
    q = oxiquant.quantize_network(
        m, bits, x, per_channel=per_channel, optimize_signs=optimize_signs, dequantize_outputs=False, progress=False
    )
    floats = ptq_graphs.ends_in_float_island(q, net)
    check_agrees(q, {"x": x}, bound=reference.step_bound(q.to_onnx("fake")), integer_output=not floats)


@settings(max_examples=reference.examples(25), deadline=None)
@given(
    net=networks(max_blocks=3),
    seed=st.integers(0, 2**16),
    bits=st.integers(2, 8),
    optimize_signs=st.booleans(),
    data=st.data(),
)
def test_generated_networks_with_mixed_activation_widths_export_and_agree(net, seed, bits, optimize_signs, data):
    """Random quantizers at random other widths (`activation_bits`): every quantizer codes
    on its width, the inputs of one Add or Concat on one width, and the exports agree with
    the engine."""
    m = oxiquant.load(net)
    shape = [d.dim_value or 4 for d in net.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal([8, *shape[1:]]).astype(np.float32)
    opts = dict(optimize_signs=optimize_signs, dequantize_outputs=False, progress=False)
    plain = oxiquant.quantize_network(m, bits, x, **opts)
    tensors = sorted(a["tensor"] for a in plain.quant_info["activations"] if a["bits"] is not None)
    chosen = data.draw(st.lists(st.sampled_from(tensors), unique=True, max_size=len(tensors)))
    widths = {t: data.draw(st.integers(2, 8)) for t in chosen}
    q = oxiquant.quantize_network(m, bits, x, activation_bits=widths, **opts)
    for a in q.quant_info["activations"]:
        if a["bits"] is None:
            continue
        # Its own width, or a wider one asked of (or kept by) a sibling on a merge.
        assert a["bits"] >= widths.get(a["tensor"], bits) and a["bits"] in {bits, *widths.values()}, a
        lo, hi = a["codes"]
        top = 2 ** (a["bits"] - 1) - 1 if a["signed"] else 2 ** a["bits"] - 1
        assert hi == top and lo == (-top - 1 if a["signed"] else 0), a
    floats = ptq_graphs.ends_in_float_island(q, net)
    check_agrees(q, {"x": x}, bound=reference.step_bound(q.to_onnx("fake")), integer_output=not floats)


@settings(max_examples=reference.examples(25), deadline=None)
@given(
    net=networks(max_blocks=3, exact_sums=True),
    kind=st.sampled_from(ptq_graphs.INPUT_KINDS),
    bits=st.integers(2, 8),
    per_channel=st.booleans(),
    optimize_signs=st.booleans(),
)
def test_generated_networks_agree_with_onnxruntimes_fused_kernels(net, kind, bits, per_channel, optimize_signs):
    """onnxruntime's fused kernels requantize float(accumulator + bias): past 2^24 (a 1e-8
    weight next to an ordinary bias) that float is rounded, so the property holds where every
    sum is exact (`exact_sums` networks; `assume` counts the others)."""
    x = ptq_graphs.calibration_data(net, np.random.default_rng(0), 8, kind=kind)
    q = oxiquant.quantize_network(
        oxiquant.load(net), bits, x, per_channel=per_channel, optimize_signs=optimize_signs,
        dequantize_outputs=False, progress=False,
    )  # fmt: skip
    exact = reference.integer_sum_bound(q.to_onnx("fake")) < reference.EXACT_F32
    event("f32 sums exact" if exact else "f32 sums past 2^24: not checkable")
    assume(exact)
    floats = ptq_graphs.ends_in_float_island(q, net)
    check_agrees(q, {"x": x}, fused=True, bound=reference.step_bound(q.to_onnx("fake")), integer_output=not floats)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_branch_quantizers_round_as_the_engine(seed, fused):
    """A branch quantizer of 8-bit integers (before a Concat) is QuantizeLinear(x, s): f32
    division, rounded again. MSE clipping gives such branches grid ratios like 197/198,
    whose products sit next to ties; the export picks the s on which onnxruntime gives the
    engine's integers exactly."""
    x = np.random.default_rng(seed).standard_normal((16, 4, 7, 7)).astype(np.float32)
    q = oxiquant.quantize_network(
        oxiquant.load(ptq_graphs.pool_concat_model()), 8, x, dequantize_outputs=False, progress=False, clipping="mse"
    )
    on_grid = ptq_graphs.on_input_grid(q, x)
    ref = ort_session(q.to_onnx("qdq"), fused=fused).run(["y"], {"x": on_grid})[0]
    np.testing.assert_array_equal(ref, q.run(on_grid)["y"])


def test_dequantized_outputs_agree_in_real_units(calib):
    q = oxiquant.quantize_network(oxiquant.load(small_cnn()), 8, calib, per_channel=True, progress=False)
    ref = ort_session(q.to_onnx("qdq"), fused=False).run(["y"], {"x": calib})[0]
    got = q.run(calib)["y"]
    np.testing.assert_allclose(ref, got, rtol=1e-5, atol=1e-6 * np.abs(got).max())


def test_model_below_opset_13_is_converted_for_quantization_and_exports_as_qdq():
    # A YOLO-style block at opset 11 (SiLU as x * sigmoid(x), Unsqueeze with its axes as an
    # attribute, an opset-11 Resize): quantization converts it to opset 13 and says so.
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(3)
    nodes = [
        h.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        h.make_node("Sigmoid", ["c"], ["s"]),
        h.make_node("Mul", ["c", "s"], ["silu"]),
        h.make_node("Resize", ["silu", "roi", "scales"], ["up"], mode="nearest"),
        h.make_node("GlobalAveragePool", ["up"], ["p"]),
        h.make_node("Squeeze", ["p"], ["y"], axes=[2, 3]),
    ]
    graph = h.make_graph(
        nodes,
        "yolo_block",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 6])],
        [
            nh.from_array((rng.normal(size=(6, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
            nh.from_array((rng.normal(size=6) * 0.1).astype(np.float32), "B"),
            nh.from_array(np.zeros(0, np.float32), "roi"),
            nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    cal = [rng.normal(size=(1, 3, 8, 8)).astype(np.float32) for _ in range(8)]
    with pytest.warns(UserWarning, match="converted from ai.onnx opset 11 to 13"):
        q = oxiquant.quantize_network(oxiquant.load(model), 8, cal)
    for fmt in ("qdq", "qoperator"):
        proto = q.to_onnx(fmt)
        assert proto.opset_import[0].version >= 13
        got = ort_session(proto).run(None, {"x": cal[0]})[0]
        ours = q.run(cal[0])["y"]
        step = np.abs(ours).max() / 127
        np.testing.assert_allclose(got, ours, atol=2 * step, err_msg=fmt)
    # The float model itself is left at its opset.
    assert oxiquant.load(model).to_onnx().opset_import[0].version == 11

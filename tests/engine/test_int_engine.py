"""The integer engine: quantized models run with i8/u8 activations, i8 weights, i32
accumulators and fixed-point requantization. Checked against the fake-quantized simulation
(the same graph in float arithmetic: bit-identical by design) and against onnxruntime on the
exported models (within one quantization step: it rounds x / (1/f) in f32; exactly for the
requantizations between 8-bit values, whose scales the export picks so that it can)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

import oxiquant

import ptq_graphs
import reference
from ptq_graphs import small_cnn, two_input_model

OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "per_channel": st.booleans(),
        "optimize_signs": st.booleans(),
        "clipping": st.sampled_from(["max", "mse", "sigma3"]),
        "single_shift": st.booleans(),
    },
)


def ort_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    # The graph as written (no fusion into onnxruntime's own integer kernels).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_equal_or_float_ulps(got: np.ndarray, want: np.ndarray, float_output: bool) -> None:
    """Equal; for an output written by a float island, within f32 rounding of it (both
    compute the op from the same integers, dequantized by a product rounded to f32)."""
    if float_output:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))
    else:
        np.testing.assert_array_equal(got, want)


def checkable_sums(q: oxiquant.Model) -> bool:
    """`assume`s the property's precondition (every f32 sum exact: below 2^24 in integer
    units, see tests/reference.py), counted by hypothesis: a strategy that rarely meets it
    fails the health check instead of passing without checking."""
    exact = reference.integer_sum_bound(q.to_onnx("fake")) < reference.EXACT_F32
    event("f32 sums exact" if exact else "f32 sums past 2^24: not checkable")
    assume(exact)
    return exact


@given(
    ptq_graphs.networks(exact_sums=True),
    st.sampled_from([2, 4, 8]),
    OPTIONS,
    st.sampled_from(ptq_graphs.INPUT_KINDS),
)
@example(small_cnn(), 8, {"per_channel": True, "optimize_signs": True}, "normal")
def test_integer_engine_equals_the_fake_quantized_graph(proto, bits, opts, kind):
    """Bit for bit, wherever every f32 sum of the fake graph is exact (below 2^24 in integer
    units: `exact_sums` networks, checked by `assume`); past it (a 1e-8 weight next to an
    ordinary bias) only the integer engine is exact."""
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(3), kind=kind)
    q = oxiquant.quantize_network(oxiquant.load(proto), bits, x, dequantize_outputs=False, progress=False, **opts)
    assert q.engine == "int", q.engine_note
    checkable_sums(q)
    got = q.run(x, mode="int")["y"]
    float_out = ptq_graphs.ends_in_float_island(q, proto)
    assert_equal_or_float_ulps(got, q.run(x, mode="fake")["y"], float_out)
    # ... and onnxruntime on the exported fake-quantized model, its quantizer products
    # taken in double (as written, they round in f32 first: docs/integer-engine.md).
    exact = ptq_graphs.with_exact_quantizer_products(q.to_onnx())
    assert_equal_or_float_ulps(ort_run(exact, {"x": x})["y"], got, float_out)


def assert_within_step_bound(ref: np.ndarray, got: np.ndarray, q: oxiquant.Model) -> None:
    """onnxruntime's integer kernels round each requantization in their own f32 way (one step
    on a tie) and the layers after it multiply that step by their gain: the bound of
    tests/reference.py, propagated through the model's fake graph."""
    bound = reference.step_bound(q.to_onnx("fake"))
    scale = float(np.abs(got).max())
    assert np.abs(ref - got).max() <= bound * (1 + 1e-6) + 1e-6 * scale, f"bound {bound}"


@given(ptq_graphs.networks(max_blocks=3, exact_sums=True), OPTIONS, st.sampled_from(ptq_graphs.INPUT_KINDS))
def test_integer_engine_agrees_with_onnxruntime_on_the_qdq_export(proto, opts, kind):
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(5), kind=kind)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, dequantize_outputs=False, progress=False, **opts)
    checkable_sums(q)
    got = q.run(x)["y"]
    ref = ort_run(q.to_onnx("qdq"), {"x": x})["y"]
    assert_within_step_bound(ref, got, q)


def test_default_mode_is_the_integer_engine_and_it_is_exact(rng):
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(small_cnn()), 8, x, progress=False)
    assert q.engine == "int" and q.engine_note is None
    ops = q._native.int_op_counts()
    assert ops.get("QConv", 0) > 0, ops
    np.testing.assert_array_equal(q.run(x)["y"], q.run(x, mode="int")["y"])
    np.testing.assert_array_equal(q.run(x, mode="int")["y"], q.run(x, mode="fake")["y"])
    # The batch size does not change the integer results.
    one = np.concatenate([q.run(x[i : i + 1])["y"] for i in range(4)])
    np.testing.assert_array_equal(one, q.run(x[:4])["y"])


def test_two_inputs_and_a_merge(rng):
    proto = two_input_model()
    feeds = {
        i.name: rng.standard_normal([d.dim_value or 4 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in proto.graph.input
    }
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, [feeds] * 4, dequantize_outputs=False, progress=False)
    for name in q.output_names:
        np.testing.assert_array_equal(q.run(feeds, mode="int")[name], q.run(feeds, mode="fake")[name])


def test_widths_the_engine_cannot_hold_say_so(rng):
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(small_cnn()), 12, x, progress=False)
    assert q.engine == "fake"
    assert "8 bits" in q.engine_note
    with pytest.raises(oxiquant.InvalidArgumentError, match="integer engine cannot run this model"):
        q.run(x, mode="int")
    np.testing.assert_array_equal(q.run(x)["y"], q.run(x, mode="fake")["y"])
    nq = oxiquant.quantize_network(oxiquant.load(small_cnn()), 8, x, no_quant=True, progress=False)
    assert nq.engine == "fake" and "no_quant" in nq.engine_note
    f = oxiquant.load(small_cnn())
    assert f.engine == "float"
    with pytest.raises(oxiquant.InvalidArgumentError, match="applies to quantized models"):
        f.run(x, mode="int")
    with pytest.raises(oxiquant.InvalidArgumentError, match="mode must be"):
        q.run(x, mode="int8")


DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "akamaster_resnet20_cifar10.onnx").exists(), reason="needs ../shared/data")
def test_resnet20_integer_engine_is_bit_exact_with_the_simulation():
    d = np.load(DATA / "cifar10_test.npz")
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)
    std = np.array([0.2470, 0.2435, 0.2616], np.float32)
    x = ((d["images"][:160].astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy()
    m = oxiquant.load(DATA / "akamaster_resnet20_cifar10.onnx")
    q = oxiquant.quantize_network(m, 8, x[:64], progress=False)
    name = q.output_names[0]
    np.testing.assert_array_equal(q.run(x[64:], mode="int")[name], q.run(x[64:], mode="fake")[name])


def qoperator_session(q: oxiquant.Model) -> ort.InferenceSession:
    proto = q.to_onnx("qoperator")
    onnx.checker.check_model(proto)
    # Every layer runs as an integer operator, except those whose output stays float (only
    # float islands read it: a dequantizer after it), which run as the float op on the exact
    # integers, as the float islands do.
    to_float = {
        a["name"].removesuffix("_to_float")
        for a in q.quant_info["activations"]
        if a["role"] == "dequant" and a["name"].endswith("_to_float")
    }
    affine = [n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    # (The export may suffix a node's name to keep names unique.)
    assert len(affine) <= len(to_float), (affine, sorted(to_float))
    assert all(any(n == t or n.startswith(f"{t}_") for t in to_float) for n in affine), (affine, sorted(to_float))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opts", [{}, {"per_channel": True, "optimize_signs": True}, {"clipping": "mse"}])
@pytest.mark.parametrize("bits", [8, 4])
def test_qoperator_export_runs_in_onnxruntime_and_agrees(rng, opts, bits):
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(small_cnn()), bits, x, dequantize_outputs=False, progress=False, **opts)
    proto = q.to_onnx("qoperator")
    assert {"QLinearConv", "QLinearAdd"} <= {n.op_type for n in proto.graph.node}
    got = qoperator_session(q).run(["y"], {"x": x})[0]
    assert np.abs(got - q.run(x)["y"]).max() <= 1.0


@given(ptq_graphs.networks(max_blocks=3, exact_sums=True), OPTIONS, st.sampled_from(ptq_graphs.INPUT_KINDS))
def test_qoperator_export_of_generated_networks(proto, opts, kind):
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(9), kind=kind)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, dequantize_outputs=False, progress=False, **opts)
    # onnxruntime requantizes float(accumulator + bias), rounded past 2^24.
    checkable_sums(q)
    got = qoperator_session(q).run(["y"], {"x": x})[0]
    assert_within_step_bound(got, q.run(x)["y"], q)


@pytest.mark.parametrize("seed", range(40))
def test_qoperator_branch_requantizations_round_as_the_engine(seed):
    """onnxruntime rounds the f32 product of a DequantizeLinear before QuantizeLinear rounds
    it again; near a tie that double rounding differs from the engine's exact product (and
    a Gemm after it amplifies the step). The export picks scales on which it does not."""
    x = np.random.default_rng(seed).standard_normal((16, 4, 7, 7)).astype(np.float32)
    q = oxiquant.quantize_network(
        oxiquant.load(ptq_graphs.pool_concat_model()), 8, x, dequantize_outputs=False, progress=False, clipping="mse"
    )
    on_grid = ptq_graphs.on_input_grid(q, x)
    np.testing.assert_array_equal(qoperator_session(q).run(["y"], {"x": on_grid})[0], q.run(on_grid)["y"])


def test_qoperator_needs_the_integer_engine(rng):
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    wide = oxiquant.quantize_network(oxiquant.load(small_cnn()), 12, x, progress=False)
    with pytest.raises(oxiquant.InvalidArgumentError, match="integer engine"):
        wide.to_onnx("qoperator")
    with pytest.raises(oxiquant.InvalidArgumentError, match="quantized model"):
        oxiquant.load(small_cnn()).to_onnx("qoperator")


def islands_model() -> onnx.ModelProto:
    """small_cnn with a Sigmoid in the middle and a Softmax at the end: float islands."""
    proto = small_cnn(middle="Sigmoid")
    fc = next(n for n in proto.graph.node if n.name == "fc")
    fc.output[0] = "logits"
    proto.graph.node.append(onnx.helper.make_node("Softmax", ["logits"], ["y"], axis=1, name="softmax"))
    return proto


@pytest.mark.parametrize("dequantize", [True, False])
def test_float_islands_in_the_integer_engine_and_the_qoperator_export(rng, dequantize):
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(islands_model()), 8, x, dequantize_outputs=dequantize, progress=False)
    assert {f[1] for f in q.quant_info["float_nodes"]} >= {"Sigmoid", "Softmax"}
    got = q.run(x, mode="int")["y"]
    np.testing.assert_array_equal(got, q.run(x, mode="fake")["y"])
    ref = qoperator_session(q).run(["y"], {"x": x})[0]
    step = 1.0 if not dequantize else max(a["step"] for a in q.quant_info["activations"] if a["step"])
    assert np.abs(ref - got).max() <= step


KERNEL_RUN = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import oxiquant
import ptq_graphs
outs = []
for proto in (ptq_graphs.small_cnn(), ptq_graphs.pool_concat_model()):
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(11))
    for opts in ({}, {"per_channel": True, "optimize_signs": True}):
        q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, dequantize_outputs=False, progress=False, **opts)
        outs.append(q.run(x)["y"])
np.savez(sys.argv[2], *outs)
print(oxiquant.integer_kernel())
"""


def test_every_integer_kernel_of_this_cpu_gives_the_same_outputs(tmp_path):
    """The engine under each kernel family this CPU runs (`OXIQUANT_KERNEL`, one process
    each: it is read once): the VNNI kernels take the byte-product path on inputs where AVX2
    takes the pair kernel (a signed first layer), the reference runs plain Rust; all must
    give the same integers."""
    results = {}
    for name in ("reference", "avx2", "avx512vnni", "avxvnni"):
        out = tmp_path / f"{name}.npz"
        env = {**os.environ, "OXIQUANT_KERNEL": name}
        proc = subprocess.run(
            [sys.executable, "-c", KERNEL_RUN, str(Path(__file__).parents[1]), str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        used = proc.stdout.strip()
        if used != name:
            # Not a kernel of this CPU: said on stderr, and the best one ran instead.
            assert "is not a kernel this CPU runs" in proc.stderr
            continue
        with np.load(out) as f:
            results[name] = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
    assert "reference" in results
    for name, outs in results.items():
        for got, want in zip(outs, results["reference"]):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} vs the reference kernels")

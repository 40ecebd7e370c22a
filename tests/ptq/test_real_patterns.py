"""Patterns of real trained models (benches/bench_real_models.py) that the PTQ got wrong,
each as a small model built with onnx.helper, quantized and compared with onnxruntime's
float run of the same model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    err = ((got.astype(np.float64) - ref) ** 2).sum()
    return float("inf") if err == 0 else float(10 * np.log10((ref**2).sum() / err))


def detector_head(feed_conv: bool = False) -> onnx.ModelProto:
    """YOLOv8's output: box coordinates in pixels (a Conv times a stride, about +-300) and
    class probabilities (a Sigmoid, in [0, 1]) concatenated into one output. With
    `feed_conv`, a Conv reads the Concat as well (then it must stay quantized)."""
    rng = np.random.default_rng(0)
    c, boxes, classes = 8, 4, 6
    inits = [
        nh.from_array((rng.normal(size=(c, 3, 3, 3)) * 0.3).astype(np.float32), "W0"),
        nh.from_array((rng.normal(size=(boxes, c, 1, 1)) * 0.5).astype(np.float32), "Wb"),
        nh.from_array((rng.normal(size=(classes, c, 1, 1)) * 0.5).astype(np.float32), "Wc"),
        nh.from_array(np.float32(64.0), "stride"),
        nh.from_array(np.float32(2.0), "shift"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "W0"], ["f0"], pads=[1, 1, 1, 1], name="stem"),
        h.make_node("Relu", ["f0"], ["f"], name="relu"),
        h.make_node("Conv", ["f", "Wb"], ["b0"], name="box_conv"),
        h.make_node("Mul", ["b0", "stride"], ["b"], name="box_scale"),
        h.make_node("Conv", ["f", "Wc"], ["c0"], name="cls_conv"),
        h.make_node("Sub", ["c0", "shift"], ["c1"], name="cls_shift"),
        h.make_node("Sigmoid", ["c1"], ["p"], name="cls_prob"),
        h.make_node("Concat", ["b", "p"], ["y"], axis=1, name="head_concat"),
    ]
    outputs = [h.make_tensor_value_info("y", T.FLOAT, ["N", boxes + classes, 8, 8])]
    if feed_conv:
        inits.append(nh.from_array((rng.normal(size=(2, boxes + classes, 1, 1)) * 0.1).astype(np.float32), "Wz"))
        nodes.append(h.make_node("Conv", ["y", "Wz"], ["z"], name="after_concat"))
        outputs.append(h.make_tensor_value_info("z", T.FLOAT, ["N", 2, 8, 8]))
    graph = h.make_graph(nodes, "head", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])], outputs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def test_concat_of_boxes_and_probabilities_keeps_the_probabilities() -> None:
    model = detector_head()
    rng = np.random.default_rng(1)
    calib = rng.uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)
    x = rng.uniform(0, 1, (8, 3, 8, 8)).astype(np.float32)
    (ref,) = ort_run(model, {"x": x})
    assert np.abs(ref[:, :4]).max() > 20 * np.abs(ref[:, 4:]).max()  # the pattern: ranges far apart
    q = oxiquant.quantize_network(oxiquant.load(model), 8, calib, progress=False)
    got = q.run(x)["y"]
    # One 8-bit scale shared with the boxes rounded every probability to 0 (0 dB).
    assert sqnr_db(ref[:, 4:], got[:, 4:]) > 30
    assert sqnr_db(ref[:, :4], got[:, :4]) > 30
    floats = {name: why for name, _, why in q.quant_info["float_nodes"]}
    assert "head_concat" in floats and "merge" in floats["head_concat"]
    # onnxruntime runs the QDQ export and agrees with the integer engine.
    (exported,) = ort_run(q.to_onnx(format="qdq"), {"x": x})
    assert sqnr_db(got, exported) > 35


def test_concat_read_by_a_conv_stays_quantized() -> None:
    model = detector_head(feed_conv=True)
    rng = np.random.default_rng(2)
    calib = rng.uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(model), 8, calib, progress=False)
    assert "head_concat" not in {name for name, _, _ in q.quant_info["float_nodes"]}
    x = rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
    _, ref_z = ort_run(model, {"x": x})
    got = q.run(x)
    assert sqnr_db(ref_z, got["z"]) > 20


def layer_norm_written_out() -> onnx.ModelProto:
    """PP-OCRv4's recognizer (a Paddle export) writes each LayerNorm as ReduceMean, Sub,
    Pow, ReduceMean, Add, Sqrt, Div, Mul, Add between two matrix products."""
    rng = np.random.default_rng(3)
    d = 16
    inits = [
        nh.from_array((rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32), "W1"),
        nh.from_array((rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32), "W2"),
        nh.from_array(rng.normal(size=d).astype(np.float32), "bias1"),
        nh.from_array(np.float32(2.0), "two"),
        nh.from_array(np.float32(1e-6), "eps"),
        nh.from_array(rng.uniform(0.5, 1.5, d).astype(np.float32), "gamma"),
        nh.from_array(rng.normal(size=d).astype(np.float32) * 0.1, "beta"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "W1"], ["a0"], name="fc1"),
        h.make_node("Add", ["a0", "bias1"], ["a"], name="fc1_bias"),
        h.make_node("ReduceMean", ["a"], ["mu"], axes=[-1], keepdims=1, name="ln_mean"),
        h.make_node("Sub", ["a", "mu"], ["c"], name="ln_center"),
        h.make_node("Pow", ["c", "two"], ["c2"], name="ln_square"),
        h.make_node("ReduceMean", ["c2"], ["var"], axes=[-1], keepdims=1, name="ln_var"),
        h.make_node("Add", ["var", "eps"], ["var_eps"], name="ln_eps"),
        h.make_node("Sqrt", ["var_eps"], ["sd"], name="ln_sqrt"),
        h.make_node("Div", ["c", "sd"], ["n"], name="ln_div"),
        h.make_node("Mul", ["n", "gamma"], ["ng"], name="ln_gamma"),
        h.make_node("Add", ["ng", "beta"], ["ln"], name="ln_beta"),
        h.make_node("MatMul", ["ln", "W2"], ["y"], name="fc2"),
    ]
    graph = h.make_graph(
        nodes,
        "ln",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 8, d])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 8, d])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def test_layer_norm_written_out_centers_in_float() -> None:
    model = layer_norm_written_out()
    rng = np.random.default_rng(4)
    calib = rng.normal(size=(64, 8, 16)).astype(np.float32)
    x = rng.normal(size=(16, 8, 16)).astype(np.float32)
    (ref,) = ort_run(model, {"x": x})
    q = oxiquant.quantize_network(oxiquant.load(model), 8, calib, progress=False)
    floats = {name: why for name, _, why in q.quant_info["float_nodes"]}
    # x - mean(x) is read by Pow and Div only: it stays float, not requantized to 8 bits.
    assert "merge" in floats.get("ln_center", "")
    got = q.run(x)["y"]
    assert sqnr_db(ref, got) > 30
    (exported,) = ort_run(q.to_onnx(format="qdq"), {"x": x})
    assert sqnr_db(got, exported) > 35


def test_an_output_read_by_the_next_layer_feeds_it_integers() -> None:
    """A feature map that is a graph output and the next layer's input (detector necks,
    multi-output models): the next layer must read the quantized values, not the output's
    dequantized copy (which multiplied its input by the output's scale)."""
    rng = np.random.default_rng(5)
    inits = [
        nh.from_array((rng.normal(size=(6, 3, 3, 3)) * 0.4).astype(np.float32), "W1"),
        nh.from_array((rng.normal(size=(4, 6, 1, 1)) * 0.4).astype(np.float32), "W2"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        h.make_node("Relu", ["c1"], ["feat"], name="relu1"),
        h.make_node("Conv", ["feat", "W2"], ["head"], name="conv2"),
    ]
    graph = h.make_graph(
        nodes,
        "two_outputs",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [
            h.make_tensor_value_info("feat", T.FLOAT, ["N", 6, 8, 8]),
            h.make_tensor_value_info("head", T.FLOAT, ["N", 4, 8, 8]),
        ],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    calib = rng.uniform(-1, 1, (32, 3, 8, 8)).astype(np.float32)
    x = rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32)
    ref_feat, ref_head = ort_run(model, {"x": x})
    for preset in ("best", "aidge"):
        q = oxiquant.quantize_network(oxiquant.load(model), 8, calib, preset=preset, progress=False)
        got = q.run(x)
        assert sqnr_db(ref_feat, got["feat"]) > 30, preset
        assert sqnr_db(ref_head, got["head"]) > 30, preset
        exported = ort_run(q.to_onnx(format="qdq"), {"x": x})
        assert sqnr_db(got["head"], exported[1]) > 35, preset


def test_identity_output_that_is_also_pooled_keeps_its_name() -> None:
    """A sentence encoder: `last_hidden_state = Identity(x)` is an output while x is also
    pooled into the other output. Dropping the Identity renamed the output to x's name."""
    rng = np.random.default_rng(6)
    d = 8
    inits = [
        nh.from_array((rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32), "W"),
        nh.from_array(rng.uniform(0.5, 1.5, d).astype(np.float32), "scale"),
        nh.from_array(rng.normal(size=d).astype(np.float32), "bias"),
        nh.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["a"], name="fc"),
        h.make_node("LayerNormalization", ["a", "scale", "bias"], ["hidden"], axis=-1, name="ln"),
        h.make_node("Identity", ["hidden"], ["last_hidden_state"], name="out"),
        h.make_node("ReduceMean", ["hidden", "axis1"], ["pooled"], keepdims=0, name="pool"),
    ]
    graph = h.make_graph(
        nodes,
        "encoder",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 5, d])],
        [
            h.make_tensor_value_info("last_hidden_state", T.FLOAT, ["N", 5, d]),
            h.make_tensor_value_info("pooled", T.FLOAT, ["N", d]),
        ],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    x = rng.normal(size=(4, 5, d)).astype(np.float32)
    ref_hidden, ref_pooled = ort_run(model, {"x": x})
    m = oxiquant.load(model)
    oxiquant.prepare_network(m)
    prepared = m.run(x)
    assert sorted(prepared) == ["last_hidden_state", "pooled"]
    np.testing.assert_allclose(prepared["last_hidden_state"], ref_hidden, atol=1e-5)
    q = oxiquant.quantize_network(oxiquant.load(model), 8, rng.normal(size=(32, 5, d)).astype(np.float32))
    got = q.run(x)
    assert sorted(got) == ["last_hidden_state", "pooled"]
    assert sqnr_db(ref_hidden, got["last_hidden_state"]) > 25
    assert sqnr_db(ref_pooled, got["pooled"]) > 25


def c2f_block() -> onnx.ModelProto:
    """YOLOv8's C2f: a Conv + SiLU split in two halves; the second goes through two
    bottlenecks (Conv + SiLU twice, plus a shortcut Add); the Concat of both halves and both
    bottleneck outputs feeds a 1x1 Conv. The bottlenecks' outputs are wider than the halves,
    so balancing the Concat rescales the first half's branch."""
    rng = np.random.default_rng(7)
    c = 4

    def w(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return nh.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    inits = [w("W0", (2 * c, 3, 3, 3), 0.3), nh.from_array(np.array([c, c], np.int64), "halves")]
    nodes = [
        h.make_node("Conv", ["x", "W0"], ["c0"], pads=[1, 1, 1, 1], name="cv1"),
        h.make_node("Sigmoid", ["c0"], ["s0"], name="cv1_sigmoid"),
        h.make_node("Mul", ["c0", "s0"], ["a0"], name="cv1_silu"),
        h.make_node("Split", ["a0", "halves"], ["p0", "p1"], axis=1, name="chunk"),
    ]
    prev, cat = "p1", ["p0", "p1"]
    for i in range(2):
        for j in range(2):
            inits.append(w(f"W{i}{j}", (c, c, 3, 3), 0.6))
            src = prev if j == 0 else f"m{i}a"
            nodes += [
                h.make_node("Conv", [src, f"W{i}{j}"], [f"m{i}c{j}"], pads=[1, 1, 1, 1], name=f"m{i}_conv{j}"),
                h.make_node("Sigmoid", [f"m{i}c{j}"], [f"m{i}s{j}"], name=f"m{i}_sigmoid{j}"),
                h.make_node("Mul", [f"m{i}c{j}", f"m{i}s{j}"], [f"m{i}{'ab'[j]}"], name=f"m{i}_silu{j}"),
            ]
        nodes.append(h.make_node("Add", [prev, f"m{i}b"], [f"m{i}"], name=f"m{i}_shortcut"))
        prev = f"m{i}"
        cat.append(prev)
    inits.append(w("Wout", (c, 4 * c, 1, 1), 0.3))
    nodes += [
        h.make_node("Concat", cat, ["cat"], axis=1, name="concat"),
        h.make_node("Conv", ["cat", "Wout"], ["y"], name="cv2"),
    ]
    graph = h.make_graph(
        nodes,
        "c2f",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", c, 8, 8])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def test_split_halves_balanced_for_a_concat_keep_the_other_half() -> None:
    """Balancing the Concat rescaled the quantizer before the Split (reached through the
    first half) and with it the second half, which the bottlenecks read: the normalized
    network no longer computed the model's function (YOLOv8n: 18 dB with no rounding)."""
    model = c2f_block()
    rng = np.random.default_rng(8)
    calib = rng.uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)
    x = rng.uniform(0, 1, (8, 3, 8, 8)).astype(np.float32)
    (ref,) = ort_run(model, {"x": x})
    exact = oxiquant.quantize_network(oxiquant.load(model), 8, calib, no_quant=True, progress=False)
    assert sqnr_db(ref, exact.run(x)["y"]) > 80
    q = oxiquant.quantize_network(oxiquant.load(model), 8, calib, progress=False)
    got = q.run(x)["y"]
    assert sqnr_db(ref, got) > 18  # 1 dB before the fix
    (exported,) = ort_run(q.to_onnx(format="qdq"), {"x": x})
    assert sqnr_db(got, exported) > 35


def test_scalar_input_in_calibration_batches():
    """Silero VAD's `sr`: an int64 scalar input beside the batched ones. A calibration list of
    dicts must feed it as a 0-d array (it once arrived as shape [1] and was refused)."""
    rng = np.random.default_rng(3)
    w = (rng.normal(size=(6, 5)) * 0.4).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["m"]),
        h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT),
        h.make_node("Div", ["srf", "k"], ["g"]),
        h.make_node("Mul", ["m", "g"], ["s"]),
        h.make_node("Relu", ["s"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "scalar_input",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 6]), h.make_tensor_value_info("sr", T.INT64, [])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(w, "W"), nh.from_array(np.float32(16000.0), "k")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    sr = np.array(16000, np.int64)
    calib = [{"x": rng.normal(size=(2, 6)).astype(np.float32), "sr": sr} for _ in range(8)]
    q = oxiquant.quantize_network(oxiquant.load(model), 8, calib)
    feeds = {"x": rng.normal(size=(4, 6)).astype(np.float32), "sr": sr}
    (ref,) = ort_run(model, feeds)
    assert sqnr_db(ref, q.run(feeds)["y"]) > 30

"""Real model architectures for tests: the `light` models shipped in the onnx package (with
their constant weights replaced by seeded random ones, so that a wrong kernel shows) and the
trained ResNet-20 of ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def light_names() -> list[str]:
    return sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """A light model whose ConstantOfShape weights become seeded random initializers.

    Weights (rank >= 2) get uniform(-a, a) with a = sqrt(3 / fan_in), which keeps activations
    at a sane scale through deep networks; vectors (biases, BatchNorm statistics) get
    uniform(0.5, 1.5), positive so that a BatchNorm variance stays valid."""
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    g = model.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep_nodes, new_inits = [], []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = [int(d) for d in inits[n.input[0]]]
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                a = np.sqrt(3.0 / fan_in)
                w = rng.uniform(-a, a, size=shape)
            else:
                w = rng.uniform(0.5, 1.5, size=shape)
            new_inits.append(numpy_helper.from_array(w.astype(np.float32), n.output[0]))
        else:
            keep_nodes.append(n)
    used = {i for n in keep_nodes for i in n.input}
    del g.node[:]
    g.node.extend(keep_nodes)
    kept_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new_inits)
    init_names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name in used and i.name not in init_names]
    del g.input[:]
    g.input.extend(inputs)
    return model


def light_input(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        shape = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def cifar_images(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n CIFAR-10 test images as uint8 HWC and their labels (needs ../shared/data)."""
    with np.load(SHARED_DATA / "cifar10_test.npz") as d:
        return d["images"][start : start + n], d["labels"][start : start + n]


def normalize_cifar(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def make_model(nodes, inputs, outputs, initializers=(), opset=13) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return m


def demo_model(seed: int = 0) -> onnx.ModelProto:
    """A small CNN with a residual Add and a Concat, seeded random weights: [N,1,28,28] -> [N,10]."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    inits = [
        w("w1", 8, 1, 3, 3),
        w("b1", 8),
        w("w2", 8, 8, 3, 3),
        w("b2", 8),
        w("w3", 8, 8, 1, 1),
        w("b3", 8),
        w("wf", 16 * 7 * 7, 10),
        w("bf", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="residual_add"),
        helper.make_node("Relu", ["a"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Concat", ["r2", "c3"], ["cat"], axis=1, name="concat"),
        helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[4, 4], strides=[4, 4], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wf"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "bf"], ["logits"], name="fc_bias"),
    ]
    g = helper.make_graph(
        nodes,
        "demo_cnn",
        [helper.make_tensor_value_info("x", 1, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", 1, ["N", 10])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="oxiquant-demo")
    m.ir_version = 8
    return m

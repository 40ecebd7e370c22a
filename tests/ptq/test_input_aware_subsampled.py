"""Input-aware rounding on feature maps large enough that its statistics are subsampled
(about 128 rows per weight of each layer are read): it must still beat the input-unaware
rounding on the whole data, measured against onnxruntime's float output."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import oxiquant

import zoo
from ptq_graphs import init

VI = helper.make_tensor_value_info


def conv_chain(seed: int, size: int) -> onnx.ModelProto:
    """A 3x3 convolution, a strided 3x3 one and a 1x1 one, Relus between them:
    [N,4,size,size] -> [N,6,size/2,size/2]."""
    g = np.random.default_rng(seed)
    inits, nodes, x = [], [], "x"
    layers = ((4, 8, 3, 1), (8, 8, 3, 2), (8, 6, 1, 1))
    for i, (cin, cout, kern, stride) in enumerate(layers):
        w = g.uniform(-1, 1, (cout, cin, kern, kern)) / np.sqrt(cin * kern)
        inits += [init(f"w{i}", w), init(f"b{i}", g.uniform(0, 0.3, cout))]
        out = "y" if i == 2 else f"c{i}"
        pad = kern // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}", f"b{i}"], [out], pads=[pad] * 4, strides=[stride] * 2, name=f"conv{i}"
            )
        )
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    half = size // 2
    return zoo.make_model(
        nodes,
        [VI("x", TensorProto.FLOAT, ["N", 4, size, size])],
        [VI("y", TensorProto.FLOAT, ["N", 6, half, half])],
        inits,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_subsampled_statistics_still_lower_the_output_error(seed):
    rng = np.random.default_rng(seed)
    # 48 samples of 32 x 32: 49,152 windows for the first layer (36 weights per row), far
    # more than 128 rows per weight, so its statistics keep about one window in ten.
    proto = conv_chain(seed, 32)
    x = rng.standard_normal((48, 4, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0].astype(np.float64)
    m = oxiquant.load(proto)
    err = {}
    for aware in (False, True):
        q = oxiquant.quantize_network(m, 4, x, weight_bits=4, input_aware=aware, layer_samples=48)
        err[aware] = float(np.mean((q.run(x)["y"].astype(np.float64) - ref) ** 2))
        # The weights stay on their 4-bit grid whatever rows were read.
        assert all(w["weight_bits"] == 4 for w in q.quant_info["weights"])
    assert err[True] < err[False], err

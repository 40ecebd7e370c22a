"""Independent references shared by the test folders: onnxruntime runs and the error
measures the tests compare with."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

# Relative to the output's magnitude. Two f32 engines summing in different orders, over weights
# from 1e-8 to 1e4 (degenerate kinds) with BatchNorm folded in, differ by a few 1e-5 of it.
RTOL = 3e-4


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto, x: np.ndarray, extra_outputs: list[str] = ()) -> dict[str, np.ndarray]:
    """Runs `model` on input `x` in onnxruntime; `extra_outputs` become graph outputs too."""
    if extra_outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        have = {o.name for o in model.graph.output}
        for name in extra_outputs:
            if name not in have:
                model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                have.add(name)
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"x": x})))


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = RTOL) -> None:
    """Equal within `rtol` of the magnitude of `want` (elementwise relative error means
    nothing for outputs near 0 next to large ones)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    assert err <= rtol * scale + 1e-30, f"{what}: max error {err:.3g} for outputs up to {scale:.3g}"


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.mean((got.astype(np.float64) - ref) ** 2))
    signal = float(np.mean(ref.astype(np.float64) ** 2))
    return np.inf if noise == 0 else 10 * np.log10(signal / noise)

"""Trains the bundled example of `oxiquant demo`: a small CNN on the hand-written digits.

Data: the UCI "Optical Recognition of Handwritten Digits" dataset (E. Alpaydin, C. Kaynak,
1998; https://archive.ics.uci.edu/dataset/80, CC BY 4.0), in the 8x8 version that ships with
scikit-learn (`sklearn.datasets.load_digits`: 1,797 images, 17 grey levels). scikit-learn is
used only to read those images; the training is plain numpy and deterministic (fixed seeds,
float64, full-batch order fixed), so re-running this script gives the same weights up to the
BLAS's floating-point summation order.

The network (input: pixels / 16, in [0, 1], [N, 1, 8, 8]):

    conv1 3x3 1->16, Relu                       r1
    conv2 3x3 16->16, Add(conv2, r1), Relu      r2   (a residual block)
    MaxPool 2x2                                 p    [N, 16, 4, 4]
    conv3 1x1 16->16, Relu                      r3
    Concat(p, r3)                                    [N, 32, 4, 4]
    Flatten, Gemm 512->10                       logits

Run from the repository root (needs numpy, onnx, scikit-learn):

    python scripts/train_digits_example.py

It writes python/oxiquant/examples/digits_cnn.onnx and digits.npz (a calibration split from
the training images and a held-out test split, float16 [N, 1, 8, 8] and uint8 labels) and
prints the float accuracy on the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT_DIR = Path(__file__).resolve().parents[1] / "python" / "oxiquant" / "examples"
SEED = 0
N_TEST = 600
N_CALIB = 200
EPOCHS = 40
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4

ATTRIBUTION = (
    "Trained on the UCI Optical Recognition of Handwritten Digits dataset (E. Alpaydin, C. Kaynak, 1998; "
    "https://archive.ics.uci.edu/dataset/80, CC BY 4.0), 8x8 version from scikit-learn's load_digits. "
    "Input: pixel / 16 in [0, 1], shape [N, 1, 8, 8]. Output: logits for digits 0-9."
)


# -- layers (forward and backward), float64 ------------------------------------------------
def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """[N, C, H, W] -> [N*H*W, C*k*k] for a stride-1 'same' convolution."""
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # N, C, H, W, k, k
    n, c, h, w = x.shape
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * k * k)


def conv_forward(x, w, b):
    n, _, h, wd = x.shape
    co, _, k, _ = w.shape
    cols = im2col(x, k)
    y = cols @ w.reshape(co, -1).T + b
    return y.reshape(n, h, wd, co).transpose(0, 3, 1, 2), cols


def conv_backward(dy, x, w, cols):
    n, c, h, wd = x.shape
    co, _, k, _ = w.shape
    p = k // 2
    dyf = dy.transpose(0, 2, 3, 1).reshape(-1, co)
    dw = (dyf.T @ cols).reshape(w.shape)
    db = dyf.sum(0)
    dcols = (dyf @ w.reshape(co, -1)).reshape(n, h, wd, c, k, k)
    dxp = np.zeros((n, c, h + 2 * p, wd + 2 * p))
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + h, j : j + wd] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, p : p + h, p : p + wd], dw, db


def forward(params, x):
    c1, cols1 = conv_forward(x, params["w1"], params["b1"])
    r1 = np.maximum(c1, 0)
    c2, cols2 = conv_forward(r1, params["w2"], params["b2"])
    r2 = np.maximum(c2 + r1, 0)
    n, c, h, w = r2.shape
    blocks = r2.reshape(n, c, h // 2, 2, w // 2, 2)
    p = blocks.max(axis=(3, 5))
    c3, cols3 = conv_forward(p, params["w3"], params["b3"])
    r3 = np.maximum(c3, 0)
    f = np.concatenate([p, r3], axis=1).reshape(n, -1)
    logits = f @ params["wf"].T + params["bf"]
    cache = (x, c1, cols1, r1, cols2, r2, blocks, p, c3, cols3, f)
    return logits, cache


def backward(params, cache, dlogits):
    x, c1, cols1, r1, cols2, r2, blocks, p, c3, cols3, f = cache
    g = {"wf": dlogits.T @ f, "bf": dlogits.sum(0)}
    df = (dlogits @ params["wf"]).reshape(len(x), 32, 4, 4)
    dp, dr3 = df[:, :16].copy(), df[:, 16:]
    dc3 = dr3 * (c3 > 0)
    dp_from3, g["w3"], g["b3"] = conv_backward(dc3, p, params["w3"], cols3)
    dp += dp_from3
    mask = blocks == p[:, :, :, None, :, None]
    dr2 = (mask * dp[:, :, :, None, :, None]).reshape(r2.shape)
    da = dr2 * (r2 > 0)
    dr1, g["w2"], g["b2"] = conv_backward(da, r1, params["w2"], cols2)
    dr1 = dr1 + da  # the residual connection
    dc1 = dr1 * (c1 > 0)
    _, g["w1"], g["b1"] = conv_backward(dc1, x, params["w1"], cols1)
    return g


def init_params(rng):
    def he(*shape):
        return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))

    return {
        "w1": he(16, 1, 3, 3),
        "b1": np.zeros(16),
        "w2": he(16, 16, 3, 3) * 0.5,
        "b2": np.zeros(16),
        "w3": he(16, 16, 1, 1),
        "b3": np.zeros(16),
        "wf": he(10, 512),
        "bf": np.zeros(10),
    }


def softmax_xent(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(1, keepdims=True)
    loss = -np.log(prob[np.arange(len(labels)), labels] + 1e-12).mean()
    d = prob
    d[np.arange(len(labels)), labels] -= 1
    return loss, d / len(labels)


def train(x, y, rng):
    params = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    step = 0
    for epoch in range(EPOCHS):
        lr = LR * 0.5 * (1 + np.cos(np.pi * epoch / EPOCHS))  # cosine decay
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            logits, cache = forward(params, x[idx])
            loss, dlogits = softmax_xent(logits, y[idx])
            total += loss * len(idx)
            grads = backward(params, cache, dlogits)
            step += 1
            for k in params:
                gk = grads[k] + WEIGHT_DECAY * params[k]
                m[k] = 0.9 * m[k] + 0.1 * gk
                v[k] = 0.999 * v[k] + 0.001 * gk * gk
                mh = m[k] / (1 - 0.9**step)
                vh = v[k] / (1 - 0.999**step)
                params[k] -= lr * mh / (np.sqrt(vh) + 1e-8)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:>3}: training loss {total / len(x):.4f}")
    return params


def to_onnx(params) -> onnx.ModelProto:
    f32 = {k: numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()}
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["res"], name="residual_add"),
        helper.make_node("Relu", ["res"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["p", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Concat", ["p", "r3"], ["cat"], axis=1, name="concat"),
        helper.make_node("Flatten", ["cat"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[f32[k] for k in ("w1", "b1", "w2", "b2", "w3", "b3", "wf", "bf")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="oxiquant/scripts/train_digits_example.py"
    )
    model.ir_version = 8
    model.doc_string = ATTRIBUTION
    onnx.checker.check_model(model)
    return model


def main() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).reshape(-1, 1, 8, 8)  # 17 levels: exact in float16
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(images))
    test_idx, train_idx = perm[:N_TEST], perm[N_TEST:]
    x_train, y_train = images[train_idx], labels[train_idx]
    x_test, y_test = images[test_idx], labels[test_idx]
    params = train(x_train, y_train, rng)

    model = to_onnx(params)
    logits, _ = forward({k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}, x_test)
    acc = float(np.mean(logits.argmax(1) == y_test))
    train_logits, _ = forward(params, x_train)
    train_acc = float(np.mean(train_logits.argmax(1) == y_train))
    print(
        f"float accuracy: {train_acc * 100:.2f} % on the {len(x_train)} training images, "
        f"{acc * 100:.2f} % on the {len(x_test)} held-out test images"
    )

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    onnx.save(model, OUT_DIR / "digits_cnn.onnx")
    calib = x_train[:N_CALIB]  # the first images of the (shuffled) training split
    np.savez_compressed(
        OUT_DIR / "digits.npz",
        calib_images=calib.astype(np.float16),
        calib_labels=y_train[:N_CALIB].astype(np.uint8),
        test_images=x_test.astype(np.float16),
        test_labels=y_test.astype(np.uint8),
    )
    for name in ("digits_cnn.onnx", "digits.npz"):
        print(f"wrote {OUT_DIR / name} ({(OUT_DIR / name).stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()

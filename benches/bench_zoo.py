"""Model zoo throughput: oxiquant fp32 and int8 against onnxruntime fp32 and onnxruntime's
fastest int8 form of the same model, batch 1 and 32, one command.

    python benches/bench_zoo.py [--quick] [--threads 2] [--seconds 2] [--calib 32]
                                [--models NAME ...] [--write]

Models: ResNet-20 (CIFAR-10) and MobileNetV2 (ImageNet) from ../shared/data when present
(real weights, real calibration images); an EfficientNet-Lite0-style net (3x3 and 5x5
depthwise, strides 1 and 2, ReLU6 as Clip, inverted residuals) generated here with
onnx.helper; ResNet-50, ShuffleNet (v1: grouped 1x1 convolutions, channel shuffle, depthwise
3x3) and SqueezeNet from onnx's own `light` models (the real architectures with seeded
random weights). Nothing is downloaded.

Columns: oxiquant fp32 (its float engine) and int8 (`quantize_network(model, 8, calib)` on
its integer engine); onnxruntime fp32; onnxruntime's int8 from its own `quantize_static`
(same calibration images, MinMax, per-channel weights), QDQ and QOperator, each U8S8 and
S8S8: the fastest of the four at that batch (a short alternating run picks it); and
oxiquant's QDQ and QOperator exports run in onnxruntime. Every configuration alternates
blocks of all its engines in one process (`bench_fp32.timed_rounds`), each engine on
`--threads` threads; the ratios are taken within that run. `--quick`: fewer seconds and
calibration images, batch 32 only for the small models. With --write the table replaces the
zoo section of benches/RESULTS.md."""

from __future__ import annotations

import argparse
import itertools
import os

# numpy's OpenBLAS threads spin after numpy work and take cycles from both engines' threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_fp32 import cpu_features, cpu_model, run_stamp, timed_rounds, with_dynamic_batch, write_section
from bench_int8 import cifar, session

import oxiquant

import zoo

BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"


def shared_data() -> Path:
    """`shared/data` beside the project, or beside a folder holding it (a git worktree)."""
    for p in Path(__file__).resolve().parents[1].parents:
        if (p / "shared" / "data").is_dir():
            return p / "shared" / "data"
    return zoo.SHARED_DATA


zoo.SHARED_DATA = shared_data()  # bench_int8.cifar reads it too
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet(n: int) -> np.ndarray:
    d = np.load(zoo.SHARED_DATA / "imagenet_cal200.npz")
    x = (d["images"][:n].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def efficientnet_lite(seed: int = 0) -> onnx.ModelProto:
    """EfficientNet-Lite0's layout (no squeeze-excite, ReLU6, BatchNorm folded into the
    convolutions' biases) with seeded random weights, input [N, 3, 224, 224]."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "relu6_lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "relu6_hi"),
    ]
    ids = itertools.count()

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        i = next(ids)
        fan_in = cin // group * k * k
        a = np.sqrt((6.0 if relu6 else 3.0) / fan_in)
        w = rng.uniform(-a, a, (cout, cin // group, k, k)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, cout).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")])
        y = f"conv{i}"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"w{i}", f"b{i}"],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=group,
            )
        )
        if relu6:
            nodes.append(helper.make_node("Clip", [y, "relu6_lo", "relu6_hi"], [f"relu{i}"]))
            y = f"relu{i}"
        return y

    # (expansion, channels, repeats, stride, kernel) per stage, as EfficientNet-Lite0.
    stages = [
        (1, 16, 1, 1, 3),
        (6, 24, 2, 2, 3),
        (6, 40, 2, 2, 5),
        (6, 80, 3, 2, 3),
        (6, 112, 3, 1, 5),
        (6, 192, 4, 2, 5),
        (6, 320, 1, 1, 3),
    ]
    x, c = conv("input", 3, 32, 3, 2), 32
    for expand, cout, repeats, stride, k in stages:
        for r in range(repeats):
            s = stride if r == 0 else 1
            h = conv(x, c, c * expand, 1) if expand != 1 else x
            h = conv(h, c * expand, c * expand, k, s, group=c * expand)
            h = conv(h, c * expand, cout, 1, relu6=False)
            if s == 1 and c == cout:
                i = next(ids)
                nodes.append(helper.make_node("Add", [h, x], [f"add{i}"]))
                h = f"add{i}"
            x, c = h, cout
    x = conv(x, c, 1280, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    a = np.sqrt(3.0 / 1280)
    inits += [
        numpy_helper.from_array(rng.uniform(-a, a, (1000, 1280)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"),
    ]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0_style",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def light_at_opset_13(name: str) -> onnx.ModelProto:
    """A `light` model (opset 9) with a dynamic batch at opset 13, which the int8 exports and
    onnxruntime's quantizer need: its Conv, Relu, pools, BatchNormalization (no `spatial`),
    Sum, Concat, Transpose, Gemm, and Reshape/Softmax on [N, C] mean the same at both; Dropout
    (identity at inference, its `ratio` attribute gone at 13) is removed."""
    m = with_dynamic_batch(zoo.light_model(name))
    g = m.graph
    rename = {}
    keep = []
    for n in g.node:
        assert not (n.op_type == "BatchNormalization" and any(a.name == "spatial" for a in n.attribute))
        if n.op_type == "Dropout":
            rename[n.output[0]] = n.input[0]
        else:
            keep.append(n)
    for n in keep:
        n.input[:] = [rename.get(i, i) for i in n.input]
    for o in g.output:
        assert o.name not in rename
    del g.node[:]
    g.node.extend(keep)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 13
    return m


def models(calib: int, only: list[str] | None) -> list[tuple[str, onnx.ModelProto, np.ndarray]]:
    rng = np.random.default_rng(0)
    out: list[tuple[str, onnx.ModelProto, np.ndarray]] = []

    def noise(n: int, size: int = 224) -> np.ndarray:
        return rng.standard_normal((n, 3, size, size)).astype(np.float32)

    shared = zoo.SHARED_DATA.is_dir()
    real_images = imagenet(calib) if shared else noise(calib)
    specs = [
        (
            "resnet20",
            "ResNet-20 (CIFAR-10, trained)",
            shared,
            lambda: (onnx.load(str(zoo.SHARED_DATA / "akamaster_resnet20_cifar10.onnx")), cifar(calib)),
        ),
        (
            "mobilenetv2",
            "MobileNetV2 (ImageNet, trained)",
            shared,
            lambda: (onnx.load(str(zoo.SHARED_DATA / "mobilenet_v2_imagenet.onnx")), real_images),
        ),
        ("efficientnet", "EfficientNet-Lite0-style (random weights)", True, lambda: (efficientnet_lite(), real_images)),
        ("resnet50", "ResNet-50 (light)", True, lambda: (light_at_opset_13("resnet50"), noise(calib))),
        ("shufflenet", "ShuffleNet v1 (light)", True, lambda: (light_at_opset_13("shufflenet"), noise(calib))),
        ("squeezenet", "SqueezeNet (light)", True, lambda: (light_at_opset_13("squeezenet"), noise(calib))),
    ]
    for key, title, present, make in specs:
        if present and (not only or key in only):
            proto, x = make()
            out.append((title, proto, x))
    return out


class Reader:
    """onnxruntime's calibration reader over one image at a time."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.items = iter([{name: x[i : i + 1]} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def ort_int8_forms(proto: onnx.ModelProto, calib: np.ndarray, tmp: Path) -> dict[str, onnx.ModelProto]:
    """onnxruntime's own static quantization of `proto`: QDQ and QOperator x U8S8 and S8S8,
    per-channel weights, MinMax on `calib`. A form the quantizer rejects is left out."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = tmp / "model.onnx"
    onnx.save(proto, str(src))
    name = proto.graph.input[0].name
    forms = {}
    for fmt, act in itertools.product(("QDQ", "QOperator"), ("U8S8", "S8S8")):
        dst = tmp / f"{fmt}_{act}.onnx"
        try:
            quantize_static(
                str(src),
                str(dst),
                Reader(name, calib),
                quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                activation_type=QuantType.QUInt8 if act == "U8S8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            forms[f"{fmt} {act}"] = onnx.load(str(dst))
        except Exception as e:
            print(f"  onnxruntime quantize_static {fmt} {act} failed: {type(e).__name__}: {e}", flush=True)
    return forms


def batch_of(x: np.ndarray, b: int) -> np.ndarray:
    return x[:b] if len(x) >= b else np.resize(x, (b, *x.shape[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.5 s per engine, 8 calibration images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None, help="timing budget per engine and config (default 2)")
    ap.add_argument("--calib", type=int, default=None, help="calibration images (default 32)")
    ap.add_argument("--models", nargs="*", help="resnet20 mobilenetv2 efficientnet resnet50 shufflenet squeezenet")
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    args = ap.parse_args()
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 2.0)
    ncal = args.calib if args.calib is not None else (8 if args.quick else 32)
    th = args.threads
    rows = []
    for title, proto, calib in models(ncal, args.models):
        print(f"{title}: quantizing", flush=True)
        m = oxiquant.load(proto)
        q = oxiquant.quantize_network(m, 8, calib, progress=False)
        assert q.engine == "int", q.engine_note
        name = m.input_names[0]
        with tempfile.TemporaryDirectory() as tmp:
            forms = ort_int8_forms(proto, calib, Path(tmp))
        ort_int8 = {k: session(v, th) for k, v in forms.items()}
        sessions = {
            "ort_fp32": session(proto, th),
            "ort_ox_qdq": session(q.to_onnx("qdq"), th),
            "ort_ox_qop": session(q.to_onnx("qoperator"), th),
        }
        for b in (1, 32):
            feeds = {name: batch_of(calib, b)}
            # onnxruntime's fastest int8 form at this batch, from a short alternating run.
            forms_fns = {k: (lambda s=s, feeds=feeds: s.run(None, feeds)) for k, s in ort_int8.items()}
            pick = timed_rounds(forms_fns, seconds / 4) if forms_fns else {}
            best = min(pick, key=pick.get) if pick else None
            fns = {
                "ox_fp32": lambda m=m, feeds=feeds: m.run(feeds, num_threads=th),
                "ox_int8": lambda q=q, feeds=feeds: q.run(feeds, num_threads=th),
            }
            chosen = dict(sessions)
            if best is not None:
                chosen["ort_int8"] = ort_int8[best]
            for k, s in chosen.items():
                fns[k] = lambda s=s, feeds=feeds: s.run(None, feeds)
            t = timed_rounds(fns, seconds)
            ips = {k: b / v for k, v in t.items()}
            rows.append((title, b, ips, best))
            print(
                f"{title:42s} batch {b:2d}: ox fp32 {ips['ox_fp32']:8.1f} img/s, ox int8 {ips['ox_int8']:8.1f}, "
                f"ort fp32 {ips['ort_fp32']:8.1f}, ort int8 ({best}) {ips.get('ort_int8', float('nan')):8.1f} | "
                f"fp32 {ips['ox_fp32'] / ips['ort_fp32']:.2f}x, "
                f"int8 {ips['ox_int8'] / ips.get('ort_int8', float('nan')):.2f}x",
                flush=True,
            )

    flags = (" --quick" if args.quick else "") + (f" --models {' '.join(args.models)}" if args.models else "")
    cmd = f"python benches/bench_zoo.py{flags} --threads {th} --seconds {seconds:g} --calib {ncal}"
    table = [
        f"Command: `{cmd}`  ",
        run_stamp(),
        f"Machine: {cpu_model()} ({platform.machine()}; CPU flags: {cpu_features()}), {th} threads for each "
        f"engine; oxiquant's integer kernels: {oxiquant.integer_kernel()}; onnxruntime {ort.__version__}, "
        f"oxiquant {oxiquant.__version__}. Images/s, median per call over alternating blocks of every engine "
        "of a row in one process.",
        "",
        "| model | batch | oxiquant fp32 | oxiquant int8 | ort fp32 | ort int8 (fastest form) "
        "| ort on oxiquant's QDQ | ort on oxiquant's QOperator | **fp32 / ort fp32** | **int8 / ort int8** |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nan = float("nan")
    for title, b, ips, best in rows:
        table.append(
            f"| {title} | {b} | {ips['ox_fp32']:.1f} | {ips['ox_int8']:.1f} | {ips['ort_fp32']:.1f} "
            f"| {ips.get('ort_int8', nan):.1f} ({best}) | {ips['ort_ox_qdq']:.1f} | {ips['ort_ox_qop']:.1f} "
            f"| **{ips['ox_fp32'] / ips['ort_fp32']:.2f}x** | **{ips['ox_int8'] / ips.get('ort_int8', nan):.2f}x** |"
        )
    table.append("")
    table.append(
        "ort int8 is onnxruntime's own `quantize_static` (MinMax, per-channel weights, the same calibration "
        "images), the fastest at that batch of QDQ and QOperator x U8S8 and S8S8 (named in brackets). "
        "The light models and the EfficientNet-Lite0-style net have random weights: speed only."
    )
    if args.write:
        write_section(BEGIN, END, "Model zoo throughput (`benches/bench_zoo.py`)", table)
    else:
        print("\n".join(table))


if __name__ == "__main__":
    main()

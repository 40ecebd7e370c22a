"""The `oxiquant` command line (also `python -m oxiquant`).

    oxiquant quantize MODEL.onnx --calibration DATA -o OUT.onnx [--bits 8] [...]
    oxiquant evaluate MODEL.onnx [QMODEL.onnx] --data DATA --labels LABELS
    oxiquant inspect MODEL.onnx
    oxiquant demo
    oxiquant run MODEL.onnx

Every command prints one line on stderr and exits non-zero on error (2 for bad arguments or
data, 1 when a check fails). docs/cli.md has the details.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

import oxiquant
from oxiquant import _data
from oxiquant._errors import InvalidArgumentError, ModelFormatError, OxiquantError, ShapeError, UnsupportedOpError
from oxiquant._native import PRESETS, check_bits, check_quantize_options
from oxiquant.model import EXPORT_FORMATS, Model
from oxiquant.ptq import CLIPPING_METHODS

PROG = "oxiquant"


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _layer_bits(text: str) -> tuple[str, int]:
    """NAME=BITS for --layer-bits and --activation-bits."""
    name, sep, bits = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=BITS, got '{text}'")
    return name, _bits(bits)


def _bits(text: str) -> int:
    """A bit width on the command line, checked by the core (the message drops the name,
    which argparse adds)."""
    try:
        value: Any = int(text)
    except ValueError:
        value = text
    try:
        return check_bits(value, "value")
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("value ")) from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _say(args: argparse.Namespace, text: str = "") -> None:
    if not args.quiet:
        print(text, flush=True)


# -- data -----------------------------------------------------------------------------------
IMAGE_HELP = """\
image folders (DATA is a directory; needs Pillow: pip install 'oxiquant[images]'):
  every image under DATA (recursively, sorted by path) is converted to RGB (grey for a
  1-channel model), resized so that its shorter side is --resize pixels (bilinear), centre
  cropped to --crop x --crop, scaled to [0, 1], normalized as (x - mean) / std per channel and
  laid out as --layout. Defaults: --crop is the model's input height when it is fixed, else 224;
  --resize is crop * 256 / 224; --mean/--std are ImageNet's (0.485,0.456,0.406 /
  0.229,0.224,0.225; 1-channel models: their average); --layout nchw. With class sub-folders
  (DATA/cat/*.jpg, DATA/dog/*.jpg) the labels are the sub-folders' indices in sorted order."""


def _add_image_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image preprocessing (only for a folder of images)")
    g.add_argument("--resize", type=_positive, help="shorter side after resizing (default: crop * 256 / 224)")
    g.add_argument("--crop", type=_positive, help="centre crop size (default: the model's input height, or 224)")
    g.add_argument("--mean", type=_floats, help="per-channel mean after scaling to [0, 1] (default: ImageNet)")
    g.add_argument("--std", type=_floats, help="per-channel std (default: ImageNet)")
    g.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw", help="input layout (default: nchw)")


def _single_input(model: Model) -> tuple[str, np.dtype, Optional[list[Any]]]:
    specs = model.inputs
    if len(specs) != 1:
        names = [n for n, _, _ in specs]
        raise InvalidArgumentError(
            f"the command line handles single-input models; this one has {len(specs)} inputs {names} "
            "(use the Python API: oxiquant.quantize_network with a dict of arrays)"
        )
    name, dtype, shape = specs[0]
    return name, np.dtype(dtype), shape


def _preprocess(args: argparse.Namespace, shape: Optional[list[Any]]) -> _data.Preprocess:
    layout = args.layout
    channels, height = 3, None
    if shape is not None and len(shape) == 4:
        c = shape[1] if layout == "nchw" else shape[3]
        h = shape[2] if layout == "nchw" else shape[1]
        channels = c if isinstance(c, int) else 3
        height = h if isinstance(h, int) else None
    crop = args.crop or height or 224
    resize = args.resize or round(crop * 256 / 224)
    mean = args.mean or (_data.IMAGENET_MEAN if channels != 1 else (float(np.mean(_data.IMAGENET_MEAN)),))
    std = args.std or (_data.IMAGENET_STD if channels != 1 else (float(np.mean(_data.IMAGENET_STD)),))
    return _data.Preprocess(resize=resize, crop=crop, mean=mean, std=std, layout=layout, channels=channels)


def _load_inputs(
    args: argparse.Namespace, model: Model, spec: str, what: str
) -> tuple[np.ndarray, Optional[list[Path]]]:
    return _load_for(args, _single_input(model), spec, what)


def _load_for(
    args: argparse.Namespace, input_spec: tuple[str, np.dtype, Optional[list[Any]]], spec: str, what: str
) -> tuple[np.ndarray, Optional[list[Path]]]:
    name, dtype, shape = input_spec
    prep = _preprocess(args, shape) if Path(spec).is_dir() else None
    arr, files = _data.load_data(spec, prep, args.limit, what)
    return _data.as_model_input(arr, name, dtype, shape, what), files


def _batch_size(model: Model, wanted: int) -> int:
    shape = model.inputs[0][2]
    if shape and isinstance(shape[0], int):
        return int(shape[0])  # the graph pins its batch size
    return wanted


# -- quantize -------------------------------------------------------------------------------
def cmd_quantize(args: argparse.Namespace) -> int:
    from oxiquant.report import _pyplot, activation_allocation_line, format_report, layer_report, write_plots

    out = Path(args.output)
    if not out.parent.exists():
        raise InvalidArgumentError(f"output folder does not exist: {out.parent}")
    widest = max(args.bits, args.weight_bits or 0)
    if args.format in ("qdq", "qoperator") and widest > 8:
        raise InvalidArgumentError(f"--format {args.format} holds up to 8 bits, not {widest}: use --format fake")
    if args.plots:
        _pyplot()  # fails now, with the install hint, rather than after the quantization
    model = oxiquant.load(args.model)
    calib, _ = _load_inputs(args, model, args.calibration, "calibration data")
    st = check_quantize_options(
        args.bits,
        args.clipping,
        args.weight_bits,
        args.weight_clipping,
        args.preset,
        args.per_channel,
        args.optimize_signs,
        args.gptq,
        args.bias_correction,
        args.input_aware,
        args.split_channels,
    )
    split = st["split_channels"]
    _say(
        args,
        f"{model.summary()}\ncalibrating on {len(calib)} samples, {st['nb_bits']} bits, clipping {st['clipping']}, "
        f"{'per-channel' if st['per_channel'] else 'per-tensor'} weights"
        f"{', signs optimized' if st['optimize_signs'] else ''}"
        f"{', GPTQ rounding' if st['gptq'] else ''}{', bias correction' if st['bias_correction'] else ''}"
        f"{', input-aware rounding' if st['input_aware'] and not args.single_shift else ''}"
        f"{', cross-layer equalization' if args.equalize else ''}"
        f"{f', outlier channels split at {split:g} times the median' if split else ''}"
        f"{f', {args.weight_bits_budget:g} weight bits on average' if args.weight_bits_budget else ''}"
        f"{f', {args.activation_bits_budget:g} activation bits on average' if args.activation_bits_budget else ''}"
        f" (preset {st['preset']})",
    )
    t = time.perf_counter()
    q = oxiquant.quantize_network(
        model,
        args.bits,
        calib,
        preset=args.preset,
        clipping=args.clipping,
        per_channel=args.per_channel,
        optimize_signs=args.optimize_signs,
        single_shift=args.single_shift,
        weight_bits=args.weight_bits,
        weight_clipping=args.weight_clipping,
        gptq=args.gptq,
        bias_correction=args.bias_correction,
        input_aware=args.input_aware,
        split_channels=args.split_channels,
        layer_bits=dict(args.layer_bits or []),
        first_last_bits=args.first_last_bits,
        activation_bits=dict(args.activation_bits or []),
        equalize=args.equalize,
        exclude=args.exclude or [],
        weight_bits_budget=args.weight_bits_budget,
        activation_bits_budget=args.activation_bits_budget,
        layer_samples=args.layer_samples,
        batch_size=_batch_size(model, args.batch_size),
        progress=_progress_enabled(args),
        num_threads=args.threads,
    )
    dt = time.perf_counter() - t
    info = q.quant_info
    q.save(out, format=args.format)
    n_q = sum(1 for a in info["activations"] if a["step"])
    _say(args, f"quantized in {dt:.2f} s: {n_q} quantizers, {len(info['weights'])} weight tensors")
    if info.get("activation_bit_allocation"):
        _say(args, activation_allocation_line(info["activation_bit_allocation"]))
    for n, op, why in info["float_nodes"]:
        _say(args, f"kept in float: {n} ({op}): {why}")
    for w in info["warnings"]:
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    _say(args, f"wrote {out} (format {args.format})")
    if args.report or args.plots or args.table:
        samples = calib[: args.report_samples]
        report = layer_report(model, q, samples, num_threads=args.threads)
        report["settings"].update(
            {
                "model": str(args.model),
                "output": str(out),
                "format": args.format,
                "preset": st["preset"],
                "bits": st["nb_bits"],
                "weight_bits": st["weight_bits"],
                "clipping": st["clipping"],
                "weight_clipping": st["weight_clipping"],
                "per_channel": st["per_channel"],
                "optimize_signs": st["optimize_signs"],
                "single_shift": args.single_shift,
                "gptq": st["gptq"],
                "bias_correction": st["bias_correction"],
                "input_aware": st["input_aware"],
                "split_channels": st["split_channels"],
                "layer_bits": dict(args.layer_bits or []),
                "first_last_bits": args.first_last_bits,
                "activation_bits": dict(args.activation_bits or []),
                "equalize": args.equalize,
                "exclude": args.exclude or [],
                "weight_bits_budget": args.weight_bits_budget,
                "activation_bits_budget": args.activation_bits_budget,
                "calibration_samples": len(calib),
            }
        )
        if args.plots:
            for p in write_plots(report, args.plots):
                _say(args, f"wrote {p}")
        _say(args, "\n" + format_report(report))
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
            _say(args, f"wrote {args.report}")
    return 0


# -- evaluate -------------------------------------------------------------------------------
class _Runner:
    """Runs a model file batch by batch with oxiquant's engine or onnxruntime."""

    def __init__(self, path: str, runtime: str, threads: Optional[int]) -> None:
        self.path = path
        self.threads = threads
        self.model: Optional[Model] = None
        self.session = None
        ours: Optional[Exception] = None
        if runtime in ("auto", "oxiquant"):
            try:
                self.model = oxiquant.load(path)
                self.runtime = "oxiquant"
                return
            except UnsupportedOpError as e:
                if runtime == "oxiquant":
                    raise UnsupportedOpError(f"{e} (for a QDQ model use --runtime onnxruntime)") from None
                ours = e
            except ModelFormatError as e:
                # e.g. int4 tensors of a 4-bit QDQ export: onnxruntime may run what oxiquant
                # cannot load; if it cannot either, oxiquant's message is the one shown.
                if runtime == "oxiquant" or not Path(path).is_file():
                    raise
                ours = e
        try:
            import onnxruntime as ort
        except ImportError:
            raise InvalidArgumentError(
                f"{path} needs onnxruntime (oxiquant's engine cannot run it): pip install onnxruntime"
            ) from None
        if not Path(path).is_file():
            raise InvalidArgumentError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            if isinstance(ours, ModelFormatError):
                raise ours from None
            raise InvalidArgumentError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        self.runtime = "onnxruntime"

    def input_spec(self) -> tuple[str, np.dtype, Optional[list[Any]]]:
        if self.model is not None:
            return _single_input(self.model)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InvalidArgumentError(f"the command line handles single-input models; {self.path} has {len(inputs)}")
        i = inputs[0]
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
        if i.type not in types:
            raise InvalidArgumentError(f"{self.path}: input '{i.name}' has type {i.type}, not a float tensor")
        shape = [d if isinstance(d, int) else None for d in i.shape]
        return i.name, np.dtype(types[i.type]), shape

    def batch_size(self, wanted: int) -> int:
        shape = self.input_spec()[2]
        return int(shape[0]) if shape and isinstance(shape[0], int) else wanted

    @property
    def output_names(self) -> list[str]:
        if self.model is not None:
            return self.model.output_names
        return [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray, output: str) -> np.ndarray:
        if self.model is not None:
            return self.model.run(x, num_threads=self.threads)[output]
        feed = {self.session.get_inputs()[0].name: x}
        return self.session.run([output], feed)[0]


def _batched(x: np.ndarray, batch: int, progress: bool, desc: str) -> Iterator[np.ndarray]:
    chunks = (x[i : i + batch] for i in range(0, len(x), batch))
    if not progress:
        return chunks
    from tqdm.auto import tqdm

    return iter(tqdm(chunks, total=-(-len(x) // batch), desc=desc, unit="batch", leave=False))


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    if logits.shape[1] < k:
        return np.zeros(len(labels), bool)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def cmd_evaluate(args: argparse.Namespace) -> int:
    runners = [_Runner(args.model, args.runtime, args.threads)]
    if args.qmodel:
        runners.append(_Runner(args.qmodel, args.runtime, args.threads))
    x, files = _load_for(args, runners[0].input_spec(), args.data, "data")
    if args.labels is None:
        if files is None:
            raise InvalidArgumentError("--labels is required for array data (a .npy file or FILE.npz:KEY)")
        labels = _data.folder_labels(Path(args.data), files)
    else:
        labels = _data.load_array(args.labels, args.limit, "labels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError(f"labels must be a 1-D integer array, got {labels.dtype} {list(labels.shape)}")
    if len(labels) != len(x):
        raise ShapeError(f"{len(x)} samples but {len(labels)} labels")
    labels = labels.astype(np.int64)
    batch = min(r.batch_size(args.batch_size) for r in runners)
    logits = []
    for r in runners:
        out = args.output or r.output_names[0]
        if out not in r.output_names:
            raise InvalidArgumentError(f"{r.path} has no output '{out}' (outputs: {', '.join(r.output_names)})")
        parts = [r.run(b, out) for b in _batched(x, batch, _progress_enabled(args), f"evaluate {Path(r.path).name}")]
        y = np.concatenate(parts)
        if y.ndim != 2 or len(y) != len(x):
            raise ShapeError(f"output '{out}' of {r.path} has shape {list(y.shape)}; evaluate needs [N, classes]")
        logits.append(y)
    results = []
    for r, y in zip(runners, logits):
        top5 = _topk_hits(y, labels, 5) if y.shape[1] >= 5 else None
        results.append(
            {
                "model": r.path,
                "runtime": r.runtime,
                "top1": float(np.mean(_topk_hits(y, labels, 1))) * 100,
                "top5": None if top5 is None else float(np.mean(top5)) * 100,
            }
        )
    agreement = None
    if len(logits) == 2:
        agreement = float(np.mean(logits[0].argmax(1) == logits[1].argmax(1))) * 100
    print(f"{len(x)} samples, {logits[0].shape[1]} classes")
    header = f"{'':<10}" + "".join(f"{name:>14}" for name in ("float", "quantized")[: len(results)])
    print(header)
    print(f"{'runtime':<10}" + "".join(f"{r['runtime']:>14}" for r in results))
    print(f"{'top-1':<10}" + "".join(f"{r['top1']:>12.2f} %" for r in results))
    print(
        f"{'top-5':<10}"
        + "".join((f"{r['top5']:>12.2f} %" if r["top5"] is not None else f"{'-':>14}") for r in results)
    )
    if agreement is not None:
        print(f"agreement (same top-1 as the float model): {agreement:.2f} %")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"samples": len(x), "models": results, "agreement": agreement}, indent=1) + "\n"
        )
    return 0


# -- inspect --------------------------------------------------------------------------------
def _proto_summary(path: str) -> str:
    """Op counts and parameters read from the protobuf (for a model the engine cannot load)."""
    from oxiquant import onnx_io

    proto = onnx_io.read_model(path)
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"Model '{proto.graph.name}': {len(proto.graph.node)} nodes, {params:,} parameters\n  ops: {ops}"


def cmd_inspect(args: argparse.Namespace) -> int:
    from oxiquant.ptq import insert_scaling_nodes, normalize_parameters, prepare_network

    try:
        model = oxiquant.load(args.model)
    except UnsupportedOpError as e:
        print(_proto_summary(args.model))
        print("unsupported (oxiquant cannot load this model):")
        for op, node, count, why in e.unsupported:
            print(f"  {op}: {count} node(s), first '{node}': {why}")
        return 1
    print(model.summary())
    m = model.copy()
    try:
        prepare_network(m)
        insert_scaling_nodes(m)
        normalize_parameters(m)  # lists the weighted nodes; needs no data
    except UnsupportedOpError as e:
        print("unsupported by the quantization pipeline:")
        for op, node, count, why in e.unsupported:
            print(f"  {op}: {count} node(s), first '{node}': {why}")
        return 1
    info = m.quant_info
    weights = [w["name"] for w in info["weights"]]
    acts = info["activations"]
    roles: dict[str, int] = {}
    for a in acts:
        roles[a["role"]] = roles.get(a["role"], 0) + 1
    print(f"quantized: {len(weights)} weighted nodes (integer weights): {', '.join(weights) or 'none'}")
    print(
        f"quantizers: {len(acts)} activation quantizers ("
        + ", ".join(f"{k} {v}" for k, v in sorted(roles.items()))
        + ")"
    )
    floats = info["float_nodes"]
    if floats:
        print(f"stay in float: {len(floats)} node(s)")
        for n, op, why in floats:
            print(f"  {n} ({op}): {why}")
    else:
        print("stay in float: none")
    print("unsupported: none")
    for w in info["warnings"]:
        print(f"warning: {w}")
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from oxiquant import examples
    from oxiquant.report import format_report, layer_report, write_plots

    if args.plots:
        from oxiquant.report import _pyplot

        _pyplot()
    t0 = time.perf_counter()
    model = oxiquant.load(examples.DIGITS_MODEL)
    data = examples.digits_data()
    calib, x, y = data["calib_images"], data["test_images"], data["test_labels"]
    print(f"{examples.DIGITS_ATTRIBUTION}\n")
    print(model.summary())
    print(f"\ncalibration: {len(calib)} training images; evaluation: {len(x)} held-out test images\n")
    ref = model.run(x)["logits"]
    rows = [("float (fp32)", ref, None)]
    settings = {"per_channel": True, "optimize_signs": True}
    q4 = None
    for bits, clipping in ((8, "max"), (4, "mse")):
        t = time.perf_counter()
        q = oxiquant.quantize_network(
            model, bits, calib, clipping=clipping, progress=_progress_enabled(args), **settings
        )
        dt = time.perf_counter() - t
        rows.append((f"{bits}-bit ({clipping} clipping)", q.run(x)["logits"], dt))
        if bits == 8:
            q8 = q
        else:
            q4 = q
    qdq_rows = []
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        qdq = q8.to_onnx("qdq").SerializeToString()
        qop = q8.to_onnx("qoperator").SerializeToString()
        levels = (
            ("QDQ, onnxruntime basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, qdq),
            ("QDQ, onnxruntime all opt.", ort.GraphOptimizationLevel.ORT_ENABLE_ALL, qdq),
            ("QOperator, onnxruntime", ort.GraphOptimizationLevel.ORT_ENABLE_ALL, qop),
        )
        for name, level, proto in levels:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.graph_optimization_level = level
            sess = ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])
            qdq_rows.append((name, sess.run(None, {model.input_names[0]: x})[0], None))
        rows += qdq_rows
    print(f"{'model':<28}{'top-1':>9}{'agreement':>12}{'time':>9}{'same as 8-bit':>15}")
    for name, logits, dt in rows:
        acc = float(np.mean(logits.argmax(1) == y)) * 100
        agree = float(np.mean(logits.argmax(1) == ref.argmax(1))) * 100
        same = float(np.mean(logits.argmax(1) == rows[1][1].argmax(1))) * 100
        print(
            f"{name:<28}{acc:>7.2f} %{agree:>10.2f} %{(f'{dt:.2f} s' if dt is not None else ''):>9}"
            + (f"{same:>13.2f} %" if "onnxruntime" in name else "")
        )
    print(
        "(top-1 on the test images; agreement: same prediction as the float model; time: quantization;\n"
        " onnxruntime rows: the 8-bit model's QDQ export without (basic) and with (all opt.) the fusion\n"
        " into its integer kernels, and its QOperator export; the 8-bit rows run on oxiquant's integer engine)"
    )
    if ort is None:
        print("onnxruntime is not installed: the QDQ export was not run (pip install onnxruntime)")
    assert q4 is not None
    report = layer_report(model, q4, calib[:32])
    print("\nper-layer report of the 4-bit model (SQNR on 32 calibration images):")
    print(format_report(report))
    if args.plots:
        for p in write_plots(report, args.plots):
            print(f"wrote {p}")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s. The same with the command line:")
    print(
        f"  oxiquant quantize {examples.DIGITS_MODEL} --calibration {examples.DIGITS_DATA}:calib_images "
        "--bits 4 --clipping mse --per-channel --optimize-signs -o digits_int4.onnx --table"
    )
    print(
        f"  oxiquant evaluate {examples.DIGITS_MODEL} digits_int4.onnx --data {examples.DIGITS_DATA}:test_images "
        f"--labels {examples.DIGITS_DATA}:test_labels"
    )
    float_acc = float(np.mean(ref.argmax(1) == y))
    q8_acc = float(np.mean(rows[1][1].argmax(1) == y))
    ok = float_acc > 0.95 and q8_acc > float_acc - 0.01
    if qdq_rows:  # without fusions, onnxruntime computes the very integers oxiquant does
        ok &= bool(np.array_equal(qdq_rows[0][1].argmax(1), rows[1][1].argmax(1)))
        # Its integer kernels round their f32 requantization products: a rare tie may flip.
        ok &= all(float(np.mean(r[1].argmax(1) == rows[1][1].argmax(1))) >= 0.99 for r in qdq_rows)
    if not ok:
        print(f"{PROG}: error: the demo's accuracy checks failed", file=sys.stderr)
    return 0 if ok else 1


# -- run ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    model = oxiquant.load(args.model)
    print(model.summary())
    rng = np.random.default_rng(0)
    feeds = {}
    for name, dtype, shape in model.inputs:
        dims = [d if isinstance(d, int) else args.batch for d in (shape or [])]
        feeds[name] = rng.standard_normal(dims).astype(dtype)
    model.run(feeds, num_threads=args.threads)
    t = time.perf_counter()
    outs = model.run(feeds, num_threads=args.threads)
    dt = time.perf_counter() - t
    for k, v in outs.items():
        print(f"output {k}: {v.dtype} {list(v.shape)}")
    engine = model.engine
    if engine == "int":
        engine += f" (integer kernels: {oxiquant.integer_kernel()})"
    print(f"engine: {engine}")
    print(f"{dt * 1e3:.1f} ms per run")
    return 0


# -- the parser -----------------------------------------------------------------------------
QUANTIZE_EXAMPLES = (
    """\
examples:
  oxiquant quantize resnet20.onnx --calibration calib.npy -o resnet20_int8.onnx
  oxiquant quantize resnet20.onnx -c cifar.npz:images --limit 1000 --bits 4 --clipping mse \\
      --per-channel --optimize-signs --format qdq -o resnet20_int4.onnx --report report.json --plots plots/
  oxiquant quantize mobilenet.onnx -c imagenet_val/ --limit 500 --format qdq -o mobilenet_int8.onnx

DATA is FILE.npy, FILE.npz[:KEY] (an array [N, ...] preprocessed like the model's input; float16
is converted to float32) or a folder of images (see below).

"""
    + IMAGE_HELP
)

EVALUATE_EXAMPLES = (
    """\
examples:
  oxiquant evaluate resnet20.onnx resnet20_int8.onnx --data test.npz:images --labels test.npz:labels
  oxiquant evaluate resnet20.onnx --data test_images.npy --labels test_labels.npy --limit 1000
  oxiquant evaluate mobilenet.onnx mobilenet_int8.onnx --data imagenet_val/   # labels from sub-folders

prints top-1 / top-5 of each model side by side and how often the quantized model's top-1 is the
float model's. --runtime auto runs a model with oxiquant's engine when it can load it (float and
'fake' quantized files) and with onnxruntime otherwise (QDQ files); the table says which ran.

"""
    + IMAGE_HELP
)

INSPECT_EXAMPLES = """\
examples:
  oxiquant inspect resnet20.onnx

prints inputs, outputs, op counts and parameters, then what quantization would do: the nodes
with integer weights, the activation quantizers, the nodes that stay in float (and why) and
the ops oxiquant does not support (exit status 1 when there are any)."""

DEMO_EXAMPLES = """\
examples:
  oxiquant demo
  oxiquant demo --plots demo_plots/

quantizes the bundled example (a small residual + concat CNN trained on scikit-learn's 8x8
hand-written digits; data: UCI Optical Recognition of Handwritten Digits, CC BY 4.0) to 8 and 4
bits, prints the accuracy table and the 4-bit per-layer report, and runs the 8-bit QDQ export in
onnxruntime when it is installed. Offline; about a second."""

MAIN_EPILOG = """\
commands:
  quantize   float ONNX + calibration data -> quantized ONNX (+ per-layer report and plots)
  evaluate   top-1 / top-5 of a float and a quantized model side by side
  inspect    ops, parameters and what quantization would do with each node
  demo       the whole job on the bundled example, offline
  run        run a model on random input and time it

examples:
  oxiquant demo
  oxiquant quantize model.onnx --calibration calib.npy --bits 8 -o model_int8.onnx --report report.json
  oxiquant evaluate model.onnx model_int8.onnx --data test.npz:x --labels test.npz:y
  oxiquant inspect model.onnx

`oxiquant COMMAND --help` for each command's options."""


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog=PROG,
        description="oxiquant: post-training quantization of ONNX models (Aidge PTQ, Rust engine).",
        epilog=MAIN_EPILOG,
        formatter_class=_Help,
    )
    ap.add_argument("--version", action="version", version=f"oxiquant {oxiquant.__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars, no chatter")
        p.add_argument("--threads", type=_positive, help="engine threads (default: all cores)")

    q = sub.add_parser(
        "quantize",
        help="quantize an ONNX model",
        description="Quantizes a float ONNX model with the Aidge PTQ and writes the quantized ONNX file.",
        epilog=QUANTIZE_EXAMPLES,
        formatter_class=_Help,
    )
    q.add_argument("model", metavar="MODEL.onnx")
    q.add_argument("-c", "--calibration", required=True, metavar="DATA", help="calibration data (see below)")
    q.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the quantized model")
    q.add_argument("--bits", type=_bits, default=8, help="bit width, 2 to 16 (default: 8)")
    q.add_argument("--weight-bits", type=_bits, help="weight bit width (default: --bits)")
    q.add_argument(
        "--preset",
        choices=PRESETS,
        default="best",
        help="settings for what is not given: best (per-channel, signs optimized, MSE clipping) or aidge "
        "(the seed's: per-tensor, signed, max clipping) (default: best)",
    )
    q.add_argument("--clipping", choices=CLIPPING_METHODS, help="activation clipping (default: the preset's)")
    q.add_argument("--weight-clipping", choices=("max", "mse"), help="weight clipping (default: the preset's)")
    q.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        help="one weight scale per output channel (default: the preset's)",
    )
    q.add_argument(
        "--optimize-signs",
        action=argparse.BooleanOptionalAction,
        help="unsigned ranges for provably non-negative tensors (default: the preset's)",
    )
    q.add_argument("--single-shift", action="store_true", help="power-of-two requantization after affine nodes")
    q.add_argument(
        "--gptq",
        action=argparse.BooleanOptionalAction,
        help="round weights against each layer's calibration inputs (GPTQ) (default: the preset's)",
    )
    q.add_argument(
        "--bias-correction",
        action=argparse.BooleanOptionalAction,
        help="take the weight rounding's mean output shift out of the biases (default: the preset's)",
    )
    q.add_argument(
        "--input-aware",
        action=argparse.BooleanOptionalAction,
        help="round each layer's weights against its inputs in the quantized network, layer by layer "
        "(default: the preset's; on below 8 activation and weight bits)",
    )
    q.add_argument(
        "--split-channels",
        type=float,
        metavar="RATIO",
        help="split the channels of values that float islands hand to MatMuls (a transformer's LayerNorm "
        "outputs) whose range exceeds RATIO times the median channel's, and smooth into the weights those "
        "handed to convolutions only (spread above RATIO and 16); 0 turns it off (default: the "
        "preset's; 3 for 'best')",
    )
    q.add_argument(
        "--layer-samples",
        type=_positive,
        default=256,
        metavar="N",
        help="calibration samples whose layer inputs --gptq, --bias-correction and --input-aware use (default: 256)",
    )
    q.add_argument(
        "--layer-bits",
        type=_layer_bits,
        action="append",
        metavar="NODE=BITS",
        help="weight bit width of one Conv/Gemm/MatMul node (repeatable; names as in `oxiquant inspect`)",
    )
    q.add_argument(
        "--first-last-bits",
        type=_bits,
        metavar="BITS",
        help="bit width of the first and last Conv/Gemm/MatMul: their weights and the activations they read",
    )
    q.add_argument(
        "--activation-bits",
        type=_layer_bits,
        action="append",
        metavar="VALUE=BITS",
        help="bit width of one quantized activation, by value or quantizer name (repeatable; the inputs of "
        "one Add or Concat share the widest)",
    )
    q.add_argument(
        "--equalize",
        action="store_true",
        help="cross-layer equalization of the weight ranges before quantizing (helps per-tensor weights)",
    )
    q.add_argument(
        "--exclude",
        action="append",
        metavar="NODE",
        help="keep this node in float (repeatable; names as in `oxiquant inspect`)",
    )
    q.add_argument(
        "--weight-bits-budget",
        type=float,
        metavar="BITS",
        help="average weight width to spend by layer sensitivity, between --weight-bits (default 4) and 8",
    )
    q.add_argument(
        "--activation-bits-budget",
        type=float,
        metavar="BITS",
        help="average activation width (over activation elements) to spend by quantizer sensitivity, "
        "between --bits and 8",
    )
    q.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="qdq" if "qdq" in EXPORT_FORMATS else EXPORT_FORMATS[0],
        help="qdq: QuantizeLinear/DequantizeLinear, uint8 weights with zero point 128 (up to 8 bits); "
        "qoperator: QLinearConv & co. from the integer engine (up to 8 bits); "
        "fake: Mul/Round/Clip on integer-valued floats (any width) (default: qdq)",
    )
    q.add_argument("--limit", type=_positive, metavar="N", help="use the first N samples")
    q.add_argument("--batch-size", type=_positive, default=32, help="calibration batch size (default: 32)")
    q.add_argument("--report", metavar="REPORT.json", help="write the per-layer report as JSON (docs/report.md)")
    q.add_argument("--plots", metavar="DIR", help="write histograms.png and sqnr.png (needs matplotlib)")
    q.add_argument("--table", action="store_true", help="print the per-layer report (implied by --report, --plots)")
    q.add_argument(
        "--report-samples", type=_positive, default=16, metavar="N", help="samples for the report (default: 16)"
    )
    common(q)
    _add_image_options(q)
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser(
        "evaluate",
        help="accuracy of a float and a quantized model side by side",
        description="Top-1 / top-5 accuracy of MODEL (and QMODEL) on labelled data, and their agreement.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=_Help,
    )
    e.add_argument("model", metavar="MODEL.onnx")
    e.add_argument("qmodel", metavar="QMODEL.onnx", nargs="?", help="the quantized model to compare")
    e.add_argument("--data", required=True, metavar="DATA", help="inputs (see below)")
    e.add_argument("--labels", metavar="LABELS", help="FILE.npy or FILE.npz[:KEY] of integer class indices")
    e.add_argument("--output", metavar="NAME", help="output holding the logits (default: the first)")
    e.add_argument("--runtime", choices=("auto", "oxiquant", "onnxruntime"), default="auto", help="(default: auto)")
    e.add_argument("--limit", type=_positive, metavar="N", help="use the first N samples")
    e.add_argument("--batch-size", type=_positive, default=64, help="(default: 64)")
    e.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    common(e)
    _add_image_options(e)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser(
        "inspect",
        help="ops, parameters and quantizability of a model",
        description="Describes a model and what quantization would do with each of its nodes.",
        epilog=INSPECT_EXAMPLES,
        formatter_class=_Help,
    )
    i.add_argument("model", metavar="MODEL.onnx")
    i.set_defaults(func=cmd_inspect, quiet=False)

    d = sub.add_parser(
        "demo",
        help="quantize the bundled example (offline)",
        description="The whole job on the bundled example: quantize to 8 and 4 bits, accuracy table, report.",
        epilog=DEMO_EXAMPLES,
        formatter_class=_Help,
    )
    d.add_argument("--plots", metavar="DIR", help="also write the 4-bit model's plots (needs matplotlib)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser(
        "run",
        help="run a model on random input and time it",
        description="Runs MODEL on random input (symbolic dimensions set to --batch) and times one run.",
        epilog="examples:\n  oxiquant run resnet50.onnx --batch 8 --threads 2",
        formatter_class=_Help,
    )
    r.add_argument("model", metavar="MODEL.onnx")
    r.add_argument("--batch", type=_positive, default=1, help="value for symbolic dimensions (default: 1)")
    r.add_argument("--threads", type=_positive, help="engine threads (default: all cores)")
    r.set_defaults(func=cmd_run)
    return ap


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except OxiquantError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        what = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else _one_line(e)
        print(f"{PROG}: error: {what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("OXIQUANT_DEBUG"):
            raise
        print(
            f"{PROG}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(a bug: please report it; OXIQUANT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())

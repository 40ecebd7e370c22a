"""The `oxiquant` command line, run for real (subprocess) on the bundled example and on
generated models; every figure it prints is checked against onnxruntime and numpy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import oxiquant
from oxiquant import examples

import ptq_graphs
import zoo

MODEL = str(examples.DIGITS_MODEL)
DATA = str(examples.DIGITS_DATA)
SCRIPT = Path(sys.executable).parent / ("oxiquant.exe" if sys.platform == "win32" else "oxiquant")


def cli(*args: str, script: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "oxiquant"]
    r = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr
    return r


def session(path_or_proto, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    src = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def digits():
    with np.load(DATA) as d:
        return {k: d[k] for k in d.files}


def test_console_script_is_installed_and_has_help():
    assert SCRIPT.exists(), f"the wheel should install the console script {SCRIPT}"
    r = cli("--help", script=True)
    for cmd in ("quantize", "evaluate", "inspect", "demo"):
        assert cmd in r.stdout
        sub = cli(cmd, "--help", script=True)
        assert "examples:" in sub.stdout, cmd


def test_demo_prints_the_accuracy_table_of_the_bundled_example():
    r = cli("demo", script=True)
    d = digits()
    x, y = d["test_images"].astype(np.float32), d["test_labels"]
    ref = session(MODEL).run(None, {"image": x})[0]
    float_acc = np.mean(ref.argmax(1) == y) * 100
    assert float_acc > 95  # the example is trained well enough to be worth quantizing
    rows = dict(re.findall(r"^(float \(fp32\)|8-bit[^\d]*|4-bit[^\d]*|QDQ[^\d]*?)\s+([\d.]+) %", r.stdout, re.M))
    rows = {k.strip(): float(v) for k, v in rows.items()}
    assert rows["float (fp32)"] == pytest.approx(float_acc, abs=0.006)
    eight = next(v for k, v in rows.items() if k.startswith("8-bit"))
    four = next(v for k, v in rows.items() if k.startswith("4-bit"))
    assert eight >= float_acc - 1 and four >= float_acc - 5
    # The 8-bit model exported as QDQ, run here by onnxruntime without fusions, is what the
    # demo's "basic" row reports.
    q8 = oxiquant.quantize_network(
        oxiquant.load(MODEL),
        8,
        d["calib_images"],
        clipping="max",
        per_channel=True,
        optimize_signs=True,
        progress=False,
    )
    qdq = session(q8.to_onnx("qdq"), ort.GraphOptimizationLevel.ORT_ENABLE_BASIC).run(None, {"image": x})[0]
    assert rows["QDQ, onnxruntime basic"] == pytest.approx(np.mean(qdq.argmax(1) == y) * 100, abs=0.006)
    assert "per-layer report" in r.stdout and "residual_add_scaling" in r.stdout


def test_quantize_writes_a_qdq_model_that_onnxruntime_runs_like_oxiquant(tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", MODEL, "-c", f"{DATA}:calib_images", "--bits", "8", "--per-channel", "-o", out)
    assert f"wrote {out}" in r.stdout
    onnx.checker.check_model(str(out))
    d = digits()
    x = d["test_images"][:200].astype(np.float32)
    got = session(str(out), ort.GraphOptimizationLevel.ORT_ENABLE_BASIC).run(None, {"image": x})[0]
    q = oxiquant.quantize_network(oxiquant.load(MODEL), 8, d["calib_images"], per_channel=True, progress=False)
    want = q.run(x)["logits"]
    step = next(a["step"] for a in q.quant_info["activations"] if a["name"] == "fc_scaling")
    assert np.max(np.abs(got - want)) <= step
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_run_says_which_engine_and_integer_kernels_ran(tmp_path, monkeypatch):
    out = tmp_path / "q.onnx"
    cli("quantize", MODEL, "-c", f"{DATA}:calib_images", "--bits", "8", "-o", out, "--quiet")
    assert "engine: float" in cli("run", MODEL).stdout
    # A QDQ file loads onto the integer engine; OXIQUANT_KERNEL picks the plain-Rust kernels.
    monkeypatch.setenv("OXIQUANT_KERNEL", "reference")
    assert "engine: int (integer kernels: reference)" in cli("run", out).stdout


def test_quantize_generated_model_fake_format_and_limit(tmp_path):
    proto = ptq_graphs.small_cnn(seed=3)
    model_path = tmp_path / "small.onnx"
    onnx.save(proto, model_path)
    calib = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "q6.onnx"
    r = cli(
        "quantize", model_path, "-c", tmp_path / "calib.npy", "--limit", 24, "--bits", 6, "--format", "fake", "-o", out
    )
    assert "calibrating on 24 samples" in r.stdout
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    got = session(str(out)).run(None, {"x": x})[0]
    assert np.allclose(got, oxiquant.load(str(out)).run(x)["y"], rtol=1e-5, atol=1e-5)
    q = oxiquant.quantize_network(oxiquant.load(proto), 6, calib[:24], progress=False)
    assert np.allclose(got, q.run(x)["y"], rtol=1e-5, atol=1e-5)  # --limit took the first 24


def _table(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("runtime", "top-1", "top-5"):
            rows[parts[0]] = [p for p in parts[1:] if p != "%"]
    return rows


def test_evaluate_prints_side_by_side_figures_matching_numpy(tmp_path):
    q_path = tmp_path / "q4.onnx"
    cli("quantize", MODEL, "-c", f"{DATA}:calib_images", "--bits", "4", "--clipping", "mse", "-o", q_path, "-q")
    r = cli(
        "evaluate", MODEL, q_path, "--data", f"{DATA}:test_images", "--labels", f"{DATA}:test_labels",
        "--limit", "300", "--json", tmp_path / "e.json",
    )  # fmt: skip
    d = digits()
    x, y = d["test_images"][:300].astype(np.float32), d["test_labels"][:300].astype(np.int64)
    logits = [session(MODEL).run(None, {"image": x})[0], session(str(q_path)).run(None, {"image": x})[0]]

    def topk(z, k):
        top = np.argsort(-z, axis=1, kind="stable")[:, :k]
        return 100 * np.mean((top == y[:, None]).any(1))

    table = _table(r.stdout)
    assert table["runtime"] == ["oxiquant", "onnxruntime"]  # the QDQ file needs onnxruntime
    for i, z in enumerate(logits):
        assert float(table["top-1"][i]) == pytest.approx(topk(z, 1), abs=0.006)
        assert float(table["top-5"][i]) == pytest.approx(topk(z, 5), abs=0.006)
    agree = 100 * np.mean(logits[0].argmax(1) == logits[1].argmax(1))
    m = re.search(r"agreement \(same top-1 as the float model\): ([\d.]+) %", r.stdout)
    assert m and float(m.group(1)) == pytest.approx(agree, abs=0.006)
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["samples"] == 300 and saved["agreement"] == pytest.approx(agree)


def test_evaluate_image_folder_labels_from_sub_folders(tmp_path):
    from PIL import Image

    # Solid-colour 8x8 images: resizing and cropping to 8 leave them as they are, so the input
    # is (colour / 255 - mean) / std exactly.
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (6, 3))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    for i, c in enumerate(colours):
        folder = tmp_path / "imgs" / ("a_class", "b_class")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), c, np.uint8)).save(folder / f"{i}.png")
    proto = ptq_graphs.small_cnn(seed=5)
    onnx.save(proto, tmp_path / "m.onnx")
    r = cli(
        "evaluate", tmp_path / "m.onnx", "--data", tmp_path / "imgs", "--resize", "8", "--crop", "8",
        "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3", "--json", tmp_path / "e.json",
    )  # fmt: skip
    order = [i for i in range(6) if i % 2 == 0] + [i for i in range(6) if i % 2 == 1]  # sorted by folder
    labels = np.array([0, 0, 0, 1, 1, 1])
    x = ((colours[order] / 255.0 - mean) / std).astype(np.float32)[:, :, None, None] * np.ones((1, 1, 8, 8), np.float32)
    z = session(proto).run(None, {"x": x})[0]
    assert json.loads((tmp_path / "e.json").read_text())["models"][0]["top1"] == pytest.approx(
        100 * np.mean(z.argmax(1) == labels)
    )
    assert "6 samples, 5 classes" in r.stdout


def test_inspect_lists_quantized_float_and_unsupported_nodes(tmp_path):
    r = cli("inspect", MODEL)
    assert "conv1, conv2, conv3, fc" in r.stdout and "stay in float: none" in r.stdout
    onnx.save(ptq_graphs.small_cnn(middle="Sigmoid"), tmp_path / "sig.onnx")
    r = cli("inspect", tmp_path / "sig.onnx")
    assert re.search(r"^\s+middle \(Sigmoid\): ", r.stdout, re.M)
    bad = zoo.make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Bernoulli", ["r"], ["y"], name="the_det")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    onnx.save(bad, tmp_path / "bad.onnx")
    r = cli("inspect", tmp_path / "bad.onnx", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "Bernoulli: 1 node(s), first 'the_det'" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "missing.onnx", "-c", f"{DATA}:calib_images", "-o", "{tmp}/o.onnx"], "missing.onnx"),
        (["quantize", MODEL, "-c", "{tmp}/nothing.npy", "-o", "{tmp}/o.onnx"], "not found"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_images", "-o", "{tmp}/o.onnx", "--bits", "17"], "--bits"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_images", "-o", "{tmp}/o.onnx", "--bits", "eight"], "--bits"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_images", "-o", "{tmp}/o.onnx", "--format", "tflite"], "--format"),
        (["quantize", MODEL, "-c", f"{DATA}:no_such_key", "-o", "{tmp}/o.onnx"], "no array 'no_such_key'"),
        (["quantize", MODEL, "-c", DATA, "-o", "{tmp}/o.onnx"], "pick one"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_labels", "-o", "{tmp}/o.onnx"], "uint8"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_images", "-o", "{tmp}/no/dir/o.onnx"], "does not exist"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_images", "-o", "{tmp}/o.onnx", "--bits", "10"], "up to 8"),
        (["evaluate", MODEL, "--data", f"{DATA}:test_images"], "--labels"),
        (["evaluate", MODEL, "--data", f"{DATA}:test_images", "--labels", f"{DATA}:calib_labels"], "labels"),
        (["quantize", MODEL], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_a_nonzero_exit(tmp_path, args, message):
    r = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("oxiquant") and "error" in lines[0] and message in lines[0], lines[0]
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bars_only_in_a_terminal_and_not_with_quiet(quiet):
    import fcntl
    import os
    import struct
    import termios
    import threading

    def run(stderr_tty: bool) -> str:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # tqdm needs a width
        chunks: list[bytes] = []

        def read() -> None:
            try:
                while chunk := os.read(master, 65536):
                    chunks.append(chunk)
            except OSError:  # the terminal closed
                pass

        reader = threading.Thread(target=read)
        reader.start()
        args = ["evaluate", MODEL, "--data", f"{DATA}:test_images", "--labels", f"{DATA}:test_labels"]
        r = subprocess.run(
            [sys.executable, "-m", "oxiquant", *args, "--batch-size", "8", *(["--quiet"] if quiet else [])],
            stdout=subprocess.PIPE,
            stderr=slave if stderr_tty else subprocess.PIPE,
            timeout=300,
        )
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
        assert r.returncode == 0
        return b"".join(chunks).decode(errors="replace") if stderr_tty else r.stderr.decode()

    assert ("evaluate digits_cnn.onnx" in run(True)) is not quiet
    assert run(False) == ""  # stderr is a pipe: no bar


def test_missing_optional_dependencies_are_one_clear_line(tmp_path):
    """Pillow and matplotlib are optional extras: without them, the commands that need them
    stop with one line naming the extra to install (simulated by hiding the modules)."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"")
    hide = "import sys; sys.modules['PIL'] = None; sys.modules['matplotlib'] = None; "
    run = hide + "from oxiquant.cli import main; sys.exit(main(sys.argv[1:]))"
    cases = [
        (["evaluate", MODEL, "--data", str(tmp_path / "imgs")], "oxiquant[images]"),
        (["quantize", MODEL, "-c", f"{DATA}:calib_images", "-o", str(tmp_path / "q.onnx"), "--plots", "p"], "[plots]"),
        (["demo", "--plots", str(tmp_path / "p")], "oxiquant[plots]"),
    ]
    for args, hint in cases:
        r = subprocess.run([sys.executable, "-c", run, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and hint in lines[0], r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_equalize_exclude_and_bit_budget_flags(tmp_path):
    d = digits()
    m = oxiquant.load(MODEL)
    p = m.copy()
    oxiquant.prepare_network(p)
    layers = oxiquant.affine_layers(p)
    out = tmp_path / "q.onnx"
    r = cli(
        "quantize", MODEL, "-c", f"{DATA}:calib_images", "--bits", "8", "--equalize", "--exclude", layers[1],
        "--weight-bits-budget", "5", "--format", "fake", "-o", out,
    )
    assert "cross-layer equalization" in r.stdout and f"kept in float: {layers[1]}" in r.stdout
    x = d["test_images"][:50].astype(np.float32)
    q = oxiquant.quantize_network(
        m, 8, d["calib_images"], equalize=True, exclude=[layers[1]], weight_bits_budget=5, progress=False
    )
    alloc = q.quant_info["bit_allocation"]
    assert layers[1] not in alloc and sum(v["weights"] * v["bits"] for v in alloc.values()) <= 5 * sum(
        v["weights"] for v in alloc.values()
    )
    got = session(str(out)).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, q.run(x)["logits"], rtol=1e-5, atol=1e-5)


def test_quantize_activation_bit_budget_flag(tmp_path):
    """--activation-bits-budget gives the API's widths (the fake export run in onnxruntime
    agrees with it) and says what it chose."""
    d = digits()
    out = tmp_path / "q.onnx"
    r = cli(
        "quantize", MODEL, "-c", f"{DATA}:calib_images", "--bits", "4", "--activation-bits-budget", "6",
        "--activation-bits", "image=8", "--format", "fake", "-o", out,
    )
    assert "activation bits by sensitivity:" in r.stdout and "6 activation bits on average" in r.stdout
    q = oxiquant.quantize_network(
        oxiquant.load(MODEL), 4, d["calib_images"], activation_bits_budget=6, activation_bits={"image": 8},
        progress=False,
    )
    acts = [a for a in q.quant_info["activations"] if a["bits"]]
    assert next(a["bits"] for a in acts if a["role"] == "input") == 8
    assert len({a["bits"] for a in acts}) > 1
    assert sum(a["bits"] * a["stats"]["count"] for a in acts) <= 6 * sum(a["stats"]["count"] for a in acts) + 1e-6
    x = d["test_images"][:50].astype(np.float32)
    got = session(str(out)).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, q.run(x, mode="fake")["logits"], rtol=1e-5, atol=1e-5)

"""Every ONNX backend node test case, through onnxruntime and through oxiquant.

The cases are generated from the onnx package's own generators (`onnx.backend.test.case.node`),
each one model and its expected outputs (computed by onnx's reference code). A case passes an
engine when the engine loads the model, runs every data set and returns the expected outputs:
same dtypes and shapes, floats within the onnx backend runner's tolerance (rtol 1e-3,
atol 1e-7, NaNs equal), other types equal. Cases whose graph inputs or outputs are not tensors
(sequences, optionals, maps) are counted apart.

    python benches/bench_node_cases.py            # prints the counts
    python benches/bench_node_cases.py --write    # also the RESULTS.md section and
                                                  # docs/node-coverage.md (every case that
                                                  # onnxruntime passes and oxiquant does not,
                                                  # grouped by why)
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import oxiquant

sys.path.insert(0, str(Path(__file__).parent))
from bench_fp32 import cpu_features, cpu_model, run_stamp, write_section

RTOL, ATOL = 1e-3, 1e-7
ort.set_default_logger_severity(3)  # the generated models trip many warnings
DOC = Path(__file__).resolve().parents[1] / "docs" / "node-coverage.md"


def cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators trip numpy overflow warnings on purpose
        state = np.random.get_state()
        try:
            out = [c for c in collect_testcases() if c.kind == "node"]
        finally:
            np.random.set_state(state)
    return sorted(out, key=lambda c: c.name)


def data_sets(case) -> list[tuple[dict, list]]:
    model = case.model
    init = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in init]
    sets = []
    for inputs, outputs in case.data_sets:
        conv = [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v) for v in inputs]
        want = [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v) for v in outputs]
        sets.append((dict(zip(names, conv)), want))
    return sets


def compare(got: dict, names: list[str], expected: list) -> str | None:
    """None when the outputs match, else what differs."""
    for name, want in zip(names, expected):
        if name not in got:
            return f"output {name} missing"
        g = np.asarray(got[name])
        if g.dtype != want.dtype:
            return f"{name}: dtype {g.dtype}, expected {want.dtype}"
        if g.shape != want.shape:
            return f"{name}: shape {g.shape}, expected {want.shape}"
        if np.issubdtype(want.dtype, np.floating) or np.issubdtype(want.dtype, np.complexfloating):
            if not np.allclose(g, want, rtol=RTOL, atol=ATOL, equal_nan=True):
                return f"{name}: values differ (max abs diff {np.nanmax(np.abs(g.astype(np.float64) - want)):.3g})"
        elif not np.array_equal(g, want):
            return f"{name}: values differ"
    return None


def run_ort(case) -> str | None:
    try:
        sess = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for feeds, want in data_sets(case):
            got = dict(zip(names, sess.run(None, feeds)))
            why = compare(got, [o.name for o in case.model.graph.output], want)
            if why:
                return why
    except Exception as e:  # any failure of the engine is a failed case
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


def run_oxiquant(case) -> tuple[str | None, str]:
    """(None, "") when it passes, else (the failure, its category)."""
    try:
        m = oxiquant.load(case.model)
    except oxiquant.UnsupportedOpError as e:
        msg = str(e)
        # "unsupported op(s): Expand (1 node, first 'Expand_0'): why; Split (...)"
        ops = re.findall(r"([A-Za-z0-9_.]+) \(\d+ nodes?, first", msg)
        return msg[:300], "unsupported op: " + (" ".join(sorted(set(ops))) or msg[:80])
    except oxiquant.OxiquantError as e:
        return f"{type(e).__name__}: {str(e)[:300]}", f"refused at load ({type(e).__name__})"
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:300]}", "crash at load"
    try:
        for feeds, want in data_sets(case):
            got = m.run(feeds)
            why = compare(got, [o.name for o in case.model.graph.output], want)
            if why:
                return why, "wrong result"
    except oxiquant.OxiquantError as e:
        return f"{type(e).__name__}: {str(e)[:300]}", f"refused at run ({type(e).__name__})"
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:300]}", "crash at run"
    return None, ""


def op_family(name: str) -> str:
    return name[len("test_") :].split("_")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md and docs/node-coverage.md")
    ap.add_argument("--filter", default="", help="only cases whose name contains this")
    args = ap.parse_args()

    all_cases = [c for c in cases() if args.filter in c.name]
    tensor_cases = [
        c
        for c in all_cases
        if all(v.type.HasField("tensor_type") for v in [*c.model.graph.input, *c.model.graph.output])
    ]
    ort_pass, ox_pass, both = [], [], []
    failures: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, c in enumerate(tensor_cases):
        o = run_ort(c) is None
        why, category = run_oxiquant(c)
        x = why is None
        ort_pass += [c.name] if o else []
        ox_pass += [c.name] if x else []
        if o and x:
            both.append(c.name)
        elif o:
            failures[category].append((c.name, why or ""))
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(tensor_cases)} cases", file=sys.stderr)
    n_ort = len(ort_pass)
    share = 100.0 * len(both) / max(n_ort, 1)
    table = [
        "",
        f"{run_stamp()}Machine: {cpu_model()}; CPU features: {cpu_features()}.  ",
        f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, oxiquant {oxiquant.__version__}. "
        "Command: `python benches/bench_node_cases.py --write`. Tolerance: rtol 1e-3, atol 1e-7 "
        "(the onnx backend runner's), dtypes and shapes exact.",
        "",
        "| cases | count |",
        "|---|---:|",
        f"| node test cases (onnx generators) | {len(all_cases)} |",
        f"| with tensor inputs and outputs only | {len(tensor_cases)} |",
        f"| passed by onnxruntime | {n_ort} |",
        f"| passed by oxiquant | {len(ox_pass)} |",
        f"| **passed by oxiquant of those onnxruntime passes** | **{len(both)} ({share:.1f} %)** |",
        "",
        "The cases onnxruntime passes and oxiquant does not, grouped by why: "
        "[docs/node-coverage.md](../docs/node-coverage.md).",
        "",
    ]
    print("\n".join(table))
    for cat, items in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(items):5d}  {cat}")
    if args.write and not args.filter:
        write_section("<!-- nodecases:begin -->", "<!-- nodecases:end -->", "ONNX node test cases", table)
        lines = [
            "# ONNX node test cases oxiquant does not pass",
            "",
            "Written by `python benches/bench_node_cases.py --write` (see `benches/RESULTS.md`, "
            f"section \"ONNX node test cases\", for the counts): the {n_ort - len(both)} cases that "
            "onnxruntime passes and oxiquant does not, grouped by why. An unsupported op is refused "
            "at load time with every unsupported op named; nothing here runs to a wrong answer "
            "silently unless listed under \"wrong result\".",
            "",
        ]
        for cat, items in sorted(failures.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            lines += [f"## {cat} ({len(items)})", ""]
            fams = Counter(op_family(n) for n, _ in items)
            if cat.startswith("unsupported op") or len(items) > 12:
                lines.append(", ".join(f"{f} x{k}" if k > 1 else f for f, k in sorted(fams.items())))
                lines.append("")
            if not cat.startswith("unsupported op"):
                for n, why in items:
                    lines.append(f"- `{n}`: {why.splitlines()[0] if why else ''}")
                lines.append("")
        DOC.write_text("\n".join(lines).rstrip() + "\n")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()

"""Runs the `pytorch-converted` cases of the ONNX suite (written by scripts/onnx_suite.sh)
through forgec's compiled engine: each case either compiles and matches its reference outputs
within 1e-4 (relative to the largest magnitude; integers and booleans exactly), or is refused
with a message naming an op the compiler does not lower yet. A mismatch, an internal error or a
crash fails the run. `--set node` runs the node cases instead (those the importer refuses are
counted apart: see scripts/onnx_suite.sh for them).

Usage: target/onnx-venv/bin/python scripts/compiled_suite.py [SUITE_DIR] [--min-match N]
       [--max-bad N] [--set pytorch-converted|node]
(`--max-bad`: mismatches tolerated, for known ones; an internal error or crash always fails.)"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

argv = sys.argv[1:]
min_match = 0
if "--min-match" in argv:
    k = argv.index("--min-match")
    min_match = int(argv[k + 1])
    del argv[k : k + 2]
max_bad = 0
if "--max-bad" in argv:
    k = argv.index("--max-bad")
    max_bad = int(argv[k + 1])
    del argv[k : k + 2]
which = "pytorch-converted"
if "--set" in argv:
    k = argv.index("--set")
    which = argv[k + 1]
    del argv[k : k + 2]
suite = argv[0] if argv else "target/onnx-suite"
root = os.path.join(suite, which)
# The suite's own per-case tolerances (written by scripts/onnx_suite.sh), where it has them.
tol_file = os.path.join(suite, "tolerances.json")
tolerances = json.load(open(tol_file)) if os.path.exists(tol_file) else {}
forgec = os.path.abspath(os.environ.get("FORGEC", "target/release/forgec"))


def run_case(case):
    """One case: (kind, detail)."""
    d = os.path.join(root, case)
    m = onnx.load(os.path.join(d, "model.onnx"))
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    data = os.path.join(d, "test_data_set_0")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            arrays = [numpy_helper.to_array(onnx.load_tensor(os.path.join(data, f"input_{k}.pb")))
                      for k in range(len(inputs))]
        except Exception:  # sequences, optionals, strings: no .npy for them
            return ("unimported", None)
        # Inputs the importer needs as constants (axes, sizes, k: a compiler fixes them) are
        # bound to the data set's values, as `forgec conformance` does: the model is rewritten
        # with them as initializers.
        bound, model_path = set(), os.path.join(d, "model.onnx")
        for _ in range(4):
            args = [forgec, "run", model_path, "--engine", "compiled", "-o", tmp]
            for k, i in enumerate(inputs):
                if i.name not in bound:
                    f = os.path.join(tmp, f"in{k}.npy")
                    np.save(f, arrays[k])
                    args += ["-i", f"{i.name}={f}"]
            r = subprocess.run(args, capture_output=True, text=True)
            need = set(re.findall(r"\(input \d+, `([^`]+)`\) must be a constant", r.stderr)) - bound
            need &= {i.name for i in inputs}
            if r.returncode != 2 or not need:
                break
            bound |= need
            m2 = onnx.load(os.path.join(d, "model.onnx"))
            for k, i in enumerate(inputs):
                if i.name in bound:
                    m2.graph.initializer.append(numpy_helper.from_array(arrays[k], i.name))
            keep = [i for i in m2.graph.input if i.name not in bound]
            del m2.graph.input[:]
            m2.graph.input.extend(keep)
            model_path = os.path.join(tmp, "bound.onnx")
            onnx.save(m2, model_path)
        if r.returncode == 2 and "--engine interp" not in r.stderr and "compile" not in r.stderr:
            return ("unimported", None)  # the importer's refusal (the conformance run counts these)
        if r.returncode == 2 and "internal error" not in r.stderr and (
            "not compiled yet" in r.stderr or "the compiler" in r.stderr
        ):
            return ("refused", re.findall(r"does not lower `([^`]+)`", r.stderr) or ["?"])
        if r.returncode != 0:
            return ("broken", f"{case}: exit {r.returncode}: {r.stderr.strip()[:300]}")
        outs = sorted(f for f in os.listdir(tmp) if f.endswith(".npy") and not re.fullmatch(r"in\d+\.npy", f))
        wrong = []
        for k, o in enumerate(m.graph.output):
            want = numpy_helper.to_array(onnx.load_tensor(os.path.join(data, f"output_{k}.pb")))
            name = o.name + ".npy"
            got = np.load(os.path.join(tmp, name if name in outs else outs[k]))
            if got.shape != want.shape:
                wrong.append(f"{o.name}: shape {got.shape} vs {want.shape}")
            elif want.dtype.kind in "fc" or want.dtype.name == "bfloat16":
                g64, w64 = got.astype(np.float64), want.astype(np.float64)
                same_nan = np.array_equal(np.isnan(g64), np.isnan(w64)) and np.array_equal(
                    g64[np.isinf(w64)], w64[np.isinf(w64)])
                fin = np.isfinite(w64)
                err = np.abs(g64[fin] - w64[fin]).max(initial=0) / max(np.abs(w64[fin]).max(initial=0), 1e-30)
                # Within 1e-4 of the largest magnitude; or within the suite's own tolerance;
                # or, for half types, within 2 units in the last place of the reference.
                rtol, atol = tolerances.get(case, [0.0, 0.0])
                close = bool(rtol or atol) and np.allclose(g64[fin], w64[fin], rtol=rtol, atol=atol)
                if want.dtype.name in ("float16", "bfloat16"):
                    with np.errstate(invalid="ignore"):
                        ulp = np.abs(np.spacing(want.astype(np.float16)).astype(np.float64))
                    if want.dtype.name == "bfloat16":
                        ulp = np.abs(w64) * 2.0**-7 + 1e-38
                    close = close or bool(np.all(np.abs(g64[fin] - w64[fin]) <= 2 * ulp[fin]))
                if not same_nan or not (err <= 1e-4 or close):
                    wrong.append(f"{o.name}: relative error {err:.3e}")
            elif not np.array_equal(got, want):
                wrong.append(f"{o.name}: values differ")
        if wrong:
            return ("bad", f"{case}: " + "; ".join(wrong))
        return ("passed", None)


passed, refused, bad, unimported, broken = 0, [], [], 0, 0
refused_ops = {}
# One case per core at a time (each is a forgec process).
cases = sorted(os.listdir(root))
with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    results = list(pool.map(run_case, cases))
for case, (kind, detail) in zip(cases, results):
    if kind == "passed":
        passed += 1
    elif kind == "unimported":
        unimported += 1
    elif kind == "refused":
        refused.append(case)
        for op in detail:
            refused_ops[op] = refused_ops.get(op, 0) + 1
    else:
        bad.append(detail)
        broken += kind == "broken"
print(f"compiled {which}: {passed} match, {len(refused)} refused by name"
      + (f" ({', '.join(refused)})" if len(refused) <= 10 else "")
      + f", {len(bad)} bad" + (f", {unimported} not imported" if unimported else ""))
if refused_ops:
    print("  refused, by op: " + ", ".join(f"{k} {v}" for k, v in sorted(refused_ops.items(), key=lambda kv: -kv[1])))
for b in bad:
    print("  " + b)
if passed < min_match:
    print(f"  {passed} cases match, fewer than the required {min_match}")
if len(bad) > max_bad:
    print(f"  {len(bad)} cases do not match, more than the {max_bad} tolerated")
sys.exit(1 if broken or len(bad) > max_bad or passed < min_match else 0)

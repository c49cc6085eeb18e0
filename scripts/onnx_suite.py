"""Writes the official ONNX backend conformance suite to disk in the standard layout:

    OUT/node/<case>/model.onnx, OUT/node/<case>/test_data_set_N/{input,output}_K.pb
    OUT/{simple,pytorch-converted,pytorch-operator,light}/...   (copied from the wheel)
    OUT/tolerances.json                                         (per-case rtol / atol)

The onnx wheel (1.23.2) generates the node cases in memory (collect_testcases); the other
suites ship as files. Run it through scripts/onnx_suite.sh, which makes the venv.
"""
import json, os, shutil, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def to_proto(v):
    if isinstance(v, onnx.TensorProto):
        return v
    if isinstance(v, np.ndarray) and v.dtype == object and v.size and all(isinstance(x, onnx.TensorProto) for x in v.flat):
        return numpy_helper.from_list([numpy_helper.to_array(x) for x in v.flat])
    if isinstance(v, list):
        return numpy_helper.from_list(v)
    if isinstance(v, dict):
        return numpy_helper.from_dict(v)
    if v is None:
        return numpy_helper.from_optional(v)
    if not hasattr(v, "shape"):
        v = np.asarray(v)
    return numpy_helper.from_array(v)


tolerances = {}
skipped = {}
written = 0
for case in node_cases.collect_testcases():
    d = os.path.join(out, "node", case.name)
    try:
        os.makedirs(d, exist_ok=True)
        onnx.save(case.model, os.path.join(d, "model.onnx"))
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds, exist_ok=True)
            for k, v in enumerate(inputs):
                with open(os.path.join(ds, f"input_{k}.pb"), "wb") as f:
                    f.write(to_proto(v).SerializeToString())
            for k, v in enumerate(outputs):
                with open(os.path.join(ds, f"output_{k}.pb"), "wb") as f:
                    f.write(to_proto(v).SerializeToString())
    except Exception as e:  # data the proto helpers cannot write: listed, counted as not passed
        shutil.rmtree(d, ignore_errors=True)
        skipped[case.name] = f"the suite's data could not be written as protobuf: {type(e).__name__}: {e}"[:300]
        continue
    tolerances[case.name] = [case.rtol, case.atol]
    written += 1
with open(os.path.join(out, "skipped.json"), "w") as f:
    json.dump(skipped, f, indent=0, sort_keys=True)

data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
for suite in ["simple", "pytorch-converted", "pytorch-operator", "light"]:
    src = os.path.join(data, suite)
    if os.path.isdir(src):
        shutil.copytree(src, os.path.join(out, suite), dirs_exist_ok=True)
with open(os.path.join(out, "tolerances.json"), "w") as f:
    json.dump(tolerances, f, indent=0, sort_keys=True)
print(f"onnx {onnx.__version__}: wrote {written} node cases ({len(skipped)} could not be written) and the shipped suites to {out}")

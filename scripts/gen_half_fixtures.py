"""Writes tests/fixtures/half: Softmax and LogSoftmax in bf16 and f16 (f32 in and out, cast inside),
an input with masked (-inf) entries, and the outputs of ONNX's reference implementation.
Run with the venv of scripts/onnx_suite.sh: target/onnx-venv/bin/python scripts/gen_half_fixtures.py"""
import numpy as np
import onnx
from onnx import TensorProto as TP, helper
from onnx.reference import ReferenceEvaluator

out = "tests/fixtures/half"
rng = np.random.default_rng(7)
x = rng.standard_normal((2, 3, 4, 6)).astype(np.float32) * 2
x[..., 4:] = -np.inf  # masked keys, as a causal mask leaves them
x[0, 0, 0, 1:] = -np.inf  # a row with a single key
nodes, outs = [], []
for name, t in (("bf16", TP.BFLOAT16), ("f16", TP.FLOAT16)):
    nodes.append(helper.make_node("Cast", ["x"], [f"x_{name}"], to=t))
    for op in ("Softmax", "LogSoftmax"):
        y = f"{op.lower()}_{name}"
        nodes.append(helper.make_node(op, [f"x_{name}"], [f"{y}_h"]))
        nodes.append(helper.make_node("Cast", [f"{y}_h"], [y], to=TP.FLOAT))
        outs.append(helper.make_tensor_value_info(y, TP.FLOAT, list(x.shape)))
g = helper.make_graph(
    nodes, "half_softmax", [helper.make_tensor_value_info("x", TP.FLOAT, list(x.shape))], outs
)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
m.ir_version = 10
onnx.checker.check_model(m)
onnx.save(m, f"{out}/softmax.onnx")
np.save(f"{out}/x.npy", x)
for o, v in zip(outs, ReferenceEvaluator(m).run(None, {"x": x})):
    np.save(f"{out}/{o.name}.npy", v)

"""Writes an N x N f32 MatMul graph (random weights, seed 0; the batch symbolic) as ONNX: the
yardstick of scripts/bench.sh (N = 1024) and scripts/compile_time.sh (N = 4096, 64 MB).
Usage: python matmul_onnx.py N OUT.onnx   (needs numpy and onnx: target/bench-venv)"""
import sys

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

n, out = int(sys.argv[1]), sys.argv[2]
w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], f"matmul{n}",
    [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", n])],
    [helper.make_tensor_value_info("y", TP.FLOAT, ["batch", n])], [numpy_helper.from_array(w, "w")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, out)

"""Times an ONNX model in onnxruntime for `forgec bench --compare onnxruntime`.

Usage: python ort_bench.py MODEL.onnx SPEC.json, where SPEC holds {"threads": [...],
"seconds": s, "runs": [{"batch": b, "inputs": [file.npy, ...]}, ...]} (inputs in the model's
input order). Prints a JSON list of records: batch, threads, median_ms, p90_ms, runs, and
times_ms (every run; `forgec bench` calls this once per round, between its own). Sessions:
intra_op_num_threads = threads, inter_op 1, sequential, all graph optimizations; three runs
of each case first, untimed.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def main():
    model, spec = sys.argv[1], json.load(open(sys.argv[2]))
    out = []
    for threads in spec["threads"]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        for run in spec["runs"]:
            feeds = {
                i.name: np.load(f).astype(TYPES.get(i.type, np.float32))
                for i, f in zip(sess.get_inputs(), run["inputs"])
            }
            for _ in range(3):
                sess.run(None, feeds)
            times = []
            start = time.perf_counter()
            while (time.perf_counter() - start < spec["seconds"] or len(times) < 2) and len(
                times
            ) < 20_000:
                t = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t)
            ms = [t * 1e3 for t in times]
            times.sort()
            out.append(
                {
                    "batch": run["batch"],
                    "threads": threads,
                    "median_ms": times[len(times) // 2] * 1e3,
                    "p90_ms": times[round((len(times) - 1) * 0.9)] * 1e3,
                    "runs": len(times),
                    "times_ms": ms,
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

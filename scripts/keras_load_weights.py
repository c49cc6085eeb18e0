#!/usr/bin/env python3
"""Loads a forgec-trained final.weights.h5 into Keras 3 (any backend) and compares it with a
Keras-trained one: `keras_load_weights.py MODEL.keras OURS.weights.h5 [KERAS.weights.h5]`.
Exit 0 when Keras loads every weight and optimizer variable without a warning (and, given a
reference, every weight is within 1e-5 of it, relative to its largest magnitude)."""
import sys, warnings
import numpy as np
import keras

model_path, ours = sys.argv[1], sys.argv[2]
ref = sys.argv[3] if len(sys.argv) > 3 else None
def loaded(path):
    m = keras.saving.load_model(model_path)
    m.optimizer.build(m.trainable_variables)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m.load_weights(path)
    for x in w:
        print("keras warned:", x.message)
    return m, len(w)
m, nw = loaded(ours)
print(f"keras {keras.__version__} ({keras.backend.backend()}) loaded {ours}: "
      f"{len(m.weights)} weights, {len(m.optimizer.variables)} optimizer variables, {nw} warnings")
bad = nw > 0
if ref:
    r, _ = loaded(ref)
    for a, b in zip(m.weights + m.optimizer.variables, r.weights + r.optimizer.variables):
        x, y = np.asarray(a), np.asarray(b)
        d = float(np.max(np.abs(x - y))) / max(1.0, float(np.max(np.abs(y)))) if x.size else 0.0
        print(f"  {a.path:40s} {str(x.shape):16s} rel diff {d:.2e}")
        bad |= d > 1e-5
sys.exit(1 if bad else 0)

"""Keras 3's learning-rate schedules at a range of steps, for forgec's schedule test.

    KERAS_BACKEND=jax python3 scripts/keras_schedules.py tests/fixtures/training/schedules.json

Each case: the schedule's Keras config (as a compile config holds it), the steps, and the rate
Keras computes at each (float32, written as the exact float).
"""
import json
import sys

import keras
import numpy as np
from keras.optimizers import schedules as S

cases = [
    S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.9),
    S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.9, staircase=True),
    S.InverseTimeDecay(0.05, decay_steps=3, decay_rate=0.5),
    S.CosineDecay(0.1, decay_steps=40, alpha=0.05),
    S.CosineDecay(0.0, decay_steps=30, warmup_target=0.2, warmup_steps=10),
    S.PiecewiseConstantDecay([10, 25], [0.1, 0.05, 0.01]),
    S.PolynomialDecay(0.1, decay_steps=30),
    S.PolynomialDecay(0.1, decay_steps=30, end_learning_rate=0.001, power=2.0),
    S.PolynomialDecay(0.1, decay_steps=13, end_learning_rate=0.01, power=0.5, cycle=True),
    S.CosineDecayRestarts(0.1, first_decay_steps=10),
    S.CosineDecayRestarts(0.1, first_decay_steps=7, t_mul=1.0, m_mul=0.8, alpha=0.1),
    S.CosineDecayRestarts(0.2, first_decay_steps=5, t_mul=1.5, m_mul=0.9, alpha=0.01),
]
steps = list(range(0, 120))
out = []
for s in cases:
    rates = [float(np.asarray(s(np.int64(t)), dtype=np.float32)) for t in steps]
    out.append({
        "schedule": keras.optimizers.schedules.serialize(s),
        "steps": steps,
        "rates": rates,
    })
json.dump({"keras": keras.__version__, "backend": keras.backend.backend(), "cases": out},
          open(sys.argv[1], "w"), indent=1)
print(f"{len(out)} schedules, {len(steps)} steps each -> {sys.argv[1]}")

#!/usr/bin/env python3
"""Keras's own runs with sample weights, as the fixtures of tests/train.rs
(`sample_weights_train_as_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_sample_weight_runs.py tests/fixtures/training/sample_weight
- sw_mlp: the bundled mlp_binary (Adam, binary cross-entropy, accuracy, as saved: sw_mlp.keras)
  on mlp_binary's training data, each sample weighted (sw_mlp.sample_weight.npy: uniform in
  [0, 2) from a fixed seed, every 7th sample 0).
- sw_two: two_outputs/two_out.keras (two inputs, two outputs, SGD, loss_weights) on that data
  with a weight per output (sw_two.sample_weight.npz, by output name; Keras 3.15's
  train_on_batch takes them as a list in output order).
- sw_sum, sw_mean_with_sample_weight: sw_mlp recompiled with BinaryCrossentropy(reduction=
  "sum") and (reduction="mean_with_sample_weight"), the same weights.
Each: 3 epochs of train_on_batch in batches of 32 in file order with `sample_weight=`; the
per-batch logs (NAME.logs.npz: the total loss, each output's loss and metrics) and
NAME.final.weights.h5."""
import os, shutil, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def run(model, name, x, y, sw, n):
    logs = {}
    for _ in range(3):
        for at in range(0, n, 32):
            cut = lambda v: {k: a[at:at + 32] for k, a in v.items()} if isinstance(v, dict) else v[at:at + 32]
            # Keras 3.15 takes several outputs' sample weights as a list in output order.
            s = [cut(sw)[o] for o in model.output_names] if isinstance(sw, dict) else cut(sw)
            r = model.train_on_batch(cut(x), cut(y), sample_weight=s, return_dict=True)
            for k, v in r.items():
                logs.setdefault(k, []).append(float(v))
    np.savez(os.path.join(out, f"{name}.logs.npz"), **{k: np.array(v, "float32") for k, v in logs.items()})
    model.save_weights(os.path.join(out, f"{name}.final.weights.h5"))
    print(name, "keras", keras.__version__, keras.backend.backend(), sorted(logs), "loss", logs["loss"][0], "->", logs["loss"][-1])


rng = np.random.default_rng(21)
x = np.load(os.path.join(fx, "training", "mlp_binary.train_x.npy"))
y = np.load(os.path.join(fx, "training", "mlp_binary.train_y.npy"))
w = rng.uniform(0.0, 2.0, size=len(x)).astype("float32")
w[::7] = 0.0
np.save(os.path.join(out, "sw_mlp.sample_weight.npy"), w)
shutil.copy(os.path.join(fx, "models", "mlp_binary.keras"), os.path.join(out, "sw_mlp.keras"))
run(keras.saving.load_model(os.path.join(out, "sw_mlp.keras")), "sw_mlp", x, y, w, len(x))

two = os.path.join(fx, "training", "two_outputs")
load = lambda n: np.load(os.path.join(two, f"{n}.npy"))
xs = {k: load(k) for k in ["input_a", "input_b"]}
ys = {k: load(k) for k in ["class_out", "bin_out"]}
n = len(xs["input_a"])
ws = {"class_out": rng.uniform(0.0, 3.0, size=n).astype("float32"), "bin_out": rng.uniform(0.5, 1.5, size=n).astype("float32")}
ws["class_out"][::5] = 0.0
np.savez(os.path.join(out, "sw_two.sample_weight.npz"), **ws)
shutil.copy(os.path.join(two, "two_out.keras"), os.path.join(out, "sw_two.keras"))
run(keras.saving.load_model(os.path.join(out, "sw_two.keras")), "sw_two", xs, ys, ws, n)

# Keras's other loss reductions, with the same sample weights: the sum, and the sum over the
# weights' sum (mlp_binary, Adam, as sw_mlp).
for red in ["sum", "mean_with_sample_weight"]:
    m = keras.saving.load_model(os.path.join(out, "sw_mlp.keras"))
    m.compile(optimizer=keras.optimizers.Adam(), loss=keras.losses.BinaryCrossentropy(reduction=red), metrics=["accuracy"])
    name = f"sw_{red}"
    m.save(os.path.join(out, f"{name}.keras"))
    run(m, name, x, y, w, len(x))

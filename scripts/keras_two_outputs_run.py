#!/usr/bin/env python3
"""Keras's own run of a model with two inputs and two outputs, a loss per output and
loss_weights, as the fixture of tests/train.rs (`two_output_losses_train_as_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_two_outputs_run.py tests/fixtures/training/two_outputs
The model is the bundled functional_two_in_two_out (Dense branches, Concatenate,
BatchNormalization, a softmax and a sigmoid head), recompiled with SGD (learning rate 0.05)
and its own losses, loss_weights (class_out 1, bin_out 0.5) and metrics, saved as
two_out.keras. SGD, because the branches' biases feed a BatchNormalization, which removes them:
their true gradient is 0, and Adam would turn round-off in it into whole steps. The data is
drawn from a fixed seed (200 samples: the last batch of each epoch has 8). Then 3 epochs of
train_on_batch in batches of 32 in file order: the per-batch total loss, each output's loss and
accuracy (two_out.logs.npz), and two_out.final.weights.h5."""
import os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
n = 200
xa = rng.normal(size=(n, 16)).astype("float32")
xb = rng.normal(size=(n, 8)).astype("float32")
w = rng.normal(size=(24, 3))
y_class = np.argmax(np.concatenate([xa, xb], 1) @ w, axis=1).astype("int32")
y_bin = (xa[:, :4].sum(1) - xb[:, :2].sum(1) > 0).astype("float32").reshape(n, 1)
for name, v in [("input_a", xa), ("input_b", xb), ("class_out", y_class), ("bin_out", y_bin)]:
    np.save(os.path.join(out, f"{name}.npy"), v)
model = keras.saving.load_model(os.path.join(fx, "models", "functional_two_in_two_out.keras"))
cc = model.get_compile_config()
model.compile(
    optimizer=keras.optimizers.SGD(learning_rate=0.05),
    loss=cc["loss"],
    loss_weights=cc["loss_weights"],
    metrics=cc["metrics"],
)
model.save(os.path.join(out, "two_out.keras"))
logs = {}
for _ in range(3):
    for at in range(0, n, 32):
        r = model.train_on_batch(
            {"input_a": xa[at:at + 32], "input_b": xb[at:at + 32]},
            {"class_out": y_class[at:at + 32], "bin_out": y_bin[at:at + 32]},
            return_dict=True,
        )
        for k, v in r.items():
            logs.setdefault(k, []).append(float(v))
np.savez(os.path.join(out, "two_out.logs.npz"), **{k: np.array(v, "float32") for k, v in logs.items()})
model.save_weights(os.path.join(out, "two_out.final.weights.h5"))
print("keras", keras.__version__, keras.backend.backend(), sorted(logs), "last loss", logs["loss"][-1])

#!/usr/bin/env python3
"""Keras's own runs of mlp_binary with learning-rate schedules and ReduceLROnPlateau, as the
fixtures of tests/train.rs (`schedules_and_plateau_follow_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_callbacks_runs.py tests/fixtures/training/callbacks
Schedules: each run starts from the model's weights (tests/fixtures/models/mlp_binary.json +
.weights.h5), takes the shared data in batches of 32 in file order for 3 epochs with
train_on_batch (each batch's own loss; the schedule's step is the optimizer's iterations), and
writes NAME.losses.npy, NAME.lr.npy (the rate of each step) and NAME.final.weights.h5; exp_adam
is also saved compiled (exp_adam.keras), so forgec train reads the schedule from the compile
config. Plateau: model.fit(x, y, batch_size=32, epochs=12, shuffle=False,
validation_split=0.25) with ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
min_delta=0.01, cooldown=1) and SGD(0.5): plateau.history.npz (every History key, the
learning rate included) and plateau.final.weights.h5. Class weights: model.fit(x, y,
batch_size=32, epochs=2, shuffle=False, class_weight={0: 1.0, 1: 3.0}) from the saved
model's compile config (Adam, accuracy): class_weight.history.npz and
class_weight.final.weights.h5."""
import json, os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
O, S = keras.optimizers, keras.optimizers.schedules
runs = {
    "exp_adam": lambda: O.Adam(learning_rate=S.ExponentialDecay(0.01, decay_steps=16, decay_rate=0.5)),
    "cosine_warmup_sgd": lambda: O.SGD(learning_rate=S.CosineDecay(
        0.0, decay_steps=48, alpha=0.1, warmup_target=0.5, warmup_steps=24)),
    "piecewise_sgd": lambda: O.SGD(learning_rate=S.PiecewiseConstantDecay([31, 63], [0.5, 0.1, 0.02])),
    "inverse_time_sgd": lambda: O.SGD(learning_rate=S.InverseTimeDecay(
        0.5, decay_steps=10, decay_rate=1.0, staircase=True)),
}
x = np.load(os.path.join(fx, "training", "mlp_binary.train_x.npy"))
y = np.load(os.path.join(fx, "training", "mlp_binary.train_y.npy"))


def fresh():
    with open(os.path.join(fx, "models", "mlp_binary.json")) as f:
        m = keras.models.model_from_json(f.read())
    m.load_weights(os.path.join(fx, "models", "mlp_binary.weights.h5"))
    return m


manifest = {"keras": keras.__version__, "backend": keras.backend.backend(), "runs": {}}
for name, make in runs.items():
    model = fresh()
    opt = make()
    model.compile(optimizer=opt, loss="binary_crossentropy")
    losses, rates = [], []
    for _ in range(3):
        for at in range(0, len(x), 32):
            rates.append(float(opt.learning_rate))
            r = model.train_on_batch(x[at:at + 32], y[at:at + 32])
            losses.append(float(np.ravel(r)[0]))
    np.save(os.path.join(out, f"{name}.losses.npy"), np.array(losses, dtype=np.float32))
    np.save(os.path.join(out, f"{name}.lr.npy"), np.array(rates, dtype=np.float64))
    model.save_weights(os.path.join(out, f"{name}.final.weights.h5"))
    if name == "exp_adam":
        m = fresh()
        m.compile(optimizer=make(), loss="binary_crossentropy", metrics=["accuracy"])
        m.save(os.path.join(out, f"{name}.keras"))
    manifest["runs"][name] = keras.saving.serialize_keras_object(opt.learning_rate)

model = fresh()
model.compile(optimizer=O.SGD(learning_rate=0.5), loss="binary_crossentropy", metrics=["accuracy"])
cb = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=0.01, cooldown=1)
h = model.fit(x, y, batch_size=32, epochs=12, shuffle=False, validation_split=0.25, verbose=0, callbacks=[cb])
np.savez(os.path.join(out, "plateau.history.npz"), **{k: np.array(v, "float64") for k, v in h.history.items()})
model.save_weights(os.path.join(out, "plateau.final.weights.h5"))
manifest["plateau"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
model = keras.models.load_model(os.path.join(fx, "models", "mlp_binary.keras"))
h = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, class_weight={0: 1.0, 1: 3.0}, verbose=0)
np.savez(os.path.join(out, "class_weight.history.npz"), **{k: np.array(v, "float64") for k, v in h.history.items()})
model.save_weights(os.path.join(out, "class_weight.final.weights.h5"))
manifest["class_weight"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print(json.dumps(manifest["plateau"]["learning_rate"]))

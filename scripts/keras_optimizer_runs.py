#!/usr/bin/env python3
"""Keras's own runs of mlp_binary (and mlp_mnist, for a categorical loss) with the optimizers,
gradient rules and loss settings that the shared runs do not cover, as fixtures for
tests/train.rs (`optimizers_match_keras` and the `forgec_train_takes_*` tests):
    KERAS_BACKEND=jax python3 scripts/keras_optimizer_runs.py tests/fixtures/training/optimizers [RUN...]
Each run starts from the model's weights (tests/fixtures/models/STEM.json + .weights.h5),
takes the shared data in batches of 32 in file order for 3 epochs with train_on_batch (each
batch's own loss), and writes NAME.losses.npy and NAME.final.weights.h5. One run is also saved
compiled (NAME.keras), so that forgec train reads its optimizer and loss from the compile config."""
import json, os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
O = keras.optimizers
runs = {
    "rmsprop": lambda: O.RMSprop(learning_rate=0.001),
    "rmsprop_centered_momentum": lambda: O.RMSprop(learning_rate=0.001, rho=0.8, momentum=0.5, centered=True),
    "adagrad": lambda: O.Adagrad(learning_rate=0.05),
    "adamw": lambda: O.AdamW(learning_rate=0.002, weight_decay=0.05),
    "adam_amsgrad": lambda: O.Adam(learning_rate=0.002, amsgrad=True),
    "sgd_clipnorm": lambda: O.SGD(learning_rate=0.05, clipnorm=0.1),
    "adam_global_clipnorm": lambda: O.Adam(learning_rate=0.002, global_clipnorm=0.05),
    "sgd_clipvalue": lambda: O.SGD(learning_rate=0.05, clipvalue=0.01),
    "sgd_momentum_weight_decay": lambda: O.SGD(learning_rate=0.02, momentum=0.9, weight_decay=0.01),
}
saved = {
    "adamw_clipnorm": lambda: O.AdamW(learning_rate=0.002, weight_decay=0.05, clipnorm=0.5),
    "sgd_huber": lambda: O.SGD(learning_rate=0.5),
    "nadam": lambda: O.Nadam(learning_rate=0.002, beta_1=0.85),
    "sgd_bce_smoothed": lambda: O.SGD(learning_rate=0.5),
    "sgd_cce_smoothed": lambda: O.SGD(learning_rate=0.1),
}
# A run's loss, when not binary cross-entropy.
loss_of = {
    "sgd_huber": lambda: keras.losses.Huber(delta=0.3),
    "sgd_bce_smoothed": lambda: keras.losses.BinaryCrossentropy(label_smoothing=0.2),
    "sgd_cce_smoothed": lambda: keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
}
# A run on mlp_mnist, with one-hot labels (written as mlp_mnist.onehot_y.npy beside the runs).
mnist = {"sgd_cce_smoothed"}
only = sys.argv[2:]  # run names: just these (default all)
manifest = {"keras": keras.__version__, "backend": keras.backend.backend(), "runs": {}}
for name, make in list(runs.items()) + list(saved.items()):
    if only and name not in only:
        continue
    loss = loss_of.get(name, lambda: "binary_crossentropy")
    stem = "mlp_mnist" if name in mnist else "mlp_binary"
    x = np.load(os.path.join(fx, "training", f"{stem}.train_x.npy"))
    y = np.load(os.path.join(fx, "training", f"{stem}.train_y.npy"))
    if name in mnist:
        y = np.eye(10, dtype="float32")[y.astype("int64").ravel()]
        np.save(os.path.join(out, "mlp_mnist.onehot_y.npy"), y)
    with open(os.path.join(fx, "models", f"{stem}.json")) as f:
        model = keras.models.model_from_json(f.read())
    model.load_weights(os.path.join(fx, "models", f"{stem}.weights.h5"))
    opt = make()
    model.compile(optimizer=opt, loss=loss())
    losses = []
    for _ in range(3):
        for at in range(0, len(x), 32):
            r = model.train_on_batch(x[at:at + 32], y[at:at + 32])
            losses.append(float(np.ravel(r)[0]))
    np.save(os.path.join(out, f"{name}.losses.npy"), np.array(losses, dtype=np.float32))
    model.save_weights(os.path.join(out, f"{name}.final.weights.h5"))
    if name in saved:
        # The same model compiled with this optimizer, from the initial weights.
        with open(os.path.join(fx, "models", f"{stem}.json")) as f:
            fresh = keras.models.model_from_json(f.read())
        fresh.load_weights(os.path.join(fx, "models", f"{stem}.weights.h5"))
        fresh.compile(optimizer=make(), loss=loss(), metrics=["accuracy"])
        fresh.save(os.path.join(out, f"{name}.keras"))
    manifest["runs"][name] = opt.get_config()
mf = os.path.join(out, "manifest.json")
if only and os.path.exists(mf):
    with open(mf) as f:
        old = json.load(f)
    old["runs"].update(manifest["runs"])
    manifest = old
with open(mf, "w") as f:
    json.dump(manifest, f, indent=1, default=str)
print("wrote", len(manifest["runs"]), "runs to", out)

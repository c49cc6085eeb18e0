#!/usr/bin/env python3
"""Keras's own fit with validation_split, as the fixture of tests/train.rs
(`validation_split_follows_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_validation_run.py tests/fixtures/training/validation
The bundled mlp_binary (Adam, binary cross-entropy, accuracy, as saved) on mlp_binary's training
data: model.fit(x, y, batch_size=32, epochs=3, shuffle=False, validation_split=0.25), so the
first floor(1024 * 0.75) = 768 samples train and the last 256 validate after every epoch.
Writes val_split.history.npz (each History key per epoch: loss, accuracy, val_loss,
val_accuracy) and val_split.final.weights.h5.
Then early_stop: the same from the file's weights again for up to 40 epochs with
EarlyStopping(monitor="val_loss", min_delta=0.005, patience=2, restore_best_weights=True):
early_stop.history.npz (the epochs it ran) and early_stop.final.weights.h5 (the best epoch's
weights, restored; the optimizer's state of the last epoch)."""
import os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
model = keras.models.load_model(os.path.join(fx, "models", "mlp_binary.keras"))
x = np.load(os.path.join(fx, "training", "mlp_binary.train_x.npy"))
y = np.load(os.path.join(fx, "training", "mlp_binary.train_y.npy"))
h = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, validation_split=0.25, verbose=0)
np.savez(os.path.join(out, "val_split.history.npz"), **{k: np.array(v, "float64") for k, v in h.history.items()})
model.save_weights(os.path.join(out, "val_split.final.weights.h5"))
print("keras", keras.__version__, keras.backend.backend(), {k: v for k, v in h.history.items()})

model = keras.models.load_model(os.path.join(fx, "models", "mlp_binary.keras"))
es = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0.005, patience=2, restore_best_weights=True)
h = model.fit(x, y, batch_size=32, epochs=40, shuffle=False, validation_split=0.25, verbose=0, callbacks=[es])
np.savez(os.path.join(out, "early_stop.history.npz"), **{k: np.array(v, "float64") for k, v in h.history.items()})
model.save_weights(os.path.join(out, "early_stop.final.weights.h5"))
print("early_stop: ran", len(h.history["loss"]), "epochs, stopped_epoch", es.stopped_epoch, "best_epoch", es.best_epoch, "val_loss", h.history["val_loss"])

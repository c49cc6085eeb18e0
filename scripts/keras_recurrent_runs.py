#!/usr/bin/env python3
"""Keras's own runs of recurrent models, as the fixtures of tests/train.rs
(`recurrent_layers_train_as_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_recurrent_runs.py tests/fixtures/training/recurrent
The data (seq.train_x.npy, seq.train_y.npy): 256 sequences of 20 steps of 8 features drawn from a
fixed seed; the target is a smooth function of the sequence (a weighted sum of its sines, more
weight on late steps), one value per sequence.
- lstm_seq: the shared corpus model (tests/fixtures/models/lstm_seq.keras: LSTM(32), Dense(1);
  Adam, mse as saved), trained from its saved weights.
- gru_seq: GRU(16, reset_after=True, return_sequences=True), GRU(8, reset_after=False,
  go_backwards=True), Dense(1); RMSprop(0.005), mse.
- rnn_seq: SimpleRNN(12, return_sequences=True), LSTM(6, recurrent_activation="hard_sigmoid",
  go_backwards=True, return_sequences=True), SimpleRNN(4, activation="relu"), Dense(1);
  Adam(0.01), mae.
Each is saved compiled before training (NAME.keras), then 3 epochs of train_on_batch in
batches of 32 in file order: NAME.losses.npy (each batch's loss) and NAME.final.weights.h5
(weights and optimizer state)."""
import os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(11)
x = rng.normal(size=(256, 20, 8)).astype("float32")
w = np.linspace(0.2, 1.0, 20)[None, :, None] * np.linspace(-1.0, 1.0, 8)[None, None, :]
y = (np.sin(x) * w).sum(axis=(1, 2), keepdims=False)[:, None] / 8.0
y = y.astype("float32")
np.save(os.path.join(out, "seq.train_x.npy"), x)
np.save(os.path.join(out, "seq.train_y.npy"), y)
L = keras.layers


def run(model, name):
    model.save(os.path.join(out, f"{name}.keras"))
    losses = []
    for _ in range(3):
        for at in range(0, len(x), 32):
            r = model.train_on_batch(x[at:at + 32], y[at:at + 32])
            losses.append(float(np.ravel(r)[0]))
    np.save(os.path.join(out, f"{name}.losses.npy"), np.array(losses, dtype=np.float32))
    model.save_weights(os.path.join(out, f"{name}.final.weights.h5"))
    print(name, "keras", keras.__version__, keras.backend.backend(), len(losses), "steps, losses",
          losses[0], "->", losses[-1])


lstm = keras.saving.load_model(os.path.join(fx, "models", "lstm_seq.keras"))
run(lstm, "lstm_seq")

keras.utils.set_random_seed(12)
gru = keras.Sequential(
    [
        keras.Input((20, 8)),
        L.GRU(16, reset_after=True, return_sequences=True),
        L.GRU(8, reset_after=False, go_backwards=True),
        L.Dense(1),
    ],
    name="gru_seq",
)
gru.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.005), loss="mse")
run(gru, "gru_seq")

keras.utils.set_random_seed(13)
rnn = keras.Sequential(
    [
        keras.Input((20, 8)),
        L.SimpleRNN(12, return_sequences=True),
        L.LSTM(6, recurrent_activation="hard_sigmoid", go_backwards=True, return_sequences=True),
        L.SimpleRNN(4, activation="relu"),
        L.Dense(1),
    ],
    name="rnn_seq",
)
rnn.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mae")
run(rnn, "rnn_seq")

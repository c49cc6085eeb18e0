#!/usr/bin/env python3
"""Keras's own runs of a model with BatchNormalization in training mode and of one with
LayerNormalization, as the fixtures of tests/train.rs (`batchnorm_trains_as_keras`,
`layernorm_trains_as_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_normalization_runs.py tests/fixtures/training/normalization
The model takes mlp_binary's data (32 features): Dense without a bias, BatchNormalization
(momentum 0.9, over the batch), Reshape to (4, 6), BatchNormalization on axis 1 (statistics
over the batch and the last axis), Dense, a frozen BatchNormalization (trainable=False: inference mode, its moving
statistics never change), Dense with a sigmoid. Its weights are drawn from a fixed seed; it is
saved compiled (Adam, binary cross-entropy, accuracy) as bn_mlp.keras before training. Then 3
epochs of train_on_batch in batches of 32 in file order: bn_mlp.losses.npy (each batch's loss)
and bn_mlp.final.weights.h5 (weights, moving statistics, optimizer state).
ln_mlp is the same data through Dense, LayerNormalization (the last axis), Reshape to (4, 6),
LayerNormalization over both axes (1, 2), Flatten, LayerNormalization without a beta
(center=False, epsilon 0.01), Dense with a sigmoid; Adam (learning rate 0.005): ln_mlp.keras,
ln_mlp.losses.npy and ln_mlp.final.weights.h5 the same way."""
import os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "tests", "fixtures")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
x = np.load(os.path.join(fx, "training", "mlp_binary.train_x.npy"))
y = np.load(os.path.join(fx, "training", "mlp_binary.train_y.npy"))
keras.utils.set_random_seed(7)
L = keras.layers
frozen = L.BatchNormalization(name="frozen_bn")
model = keras.Sequential(
    [
        keras.Input((32,)),
        L.Dense(24, use_bias=False),  # a bias before a normalization only drifts on round-off
        L.BatchNormalization(momentum=0.9),
        L.ReLU(),
        L.Reshape((4, 6)),
        L.BatchNormalization(axis=1, epsilon=0.01),
        L.Flatten(),
        L.Dense(8),
        frozen,
        L.ReLU(),
        L.Dense(1, activation="sigmoid"),
    ],
    name="bn_mlp",
)
# Moving statistics away from their initial 0 and 1, so that the frozen layer's matter.
frozen.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype("float32"))
frozen.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
frozen.gamma.assign(np.linspace(0.8, 1.2, 8).astype("float32"))
frozen.trainable = False
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="binary_crossentropy", metrics=["accuracy"])


def run(model, name):
    model.save(os.path.join(out, f"{name}.keras"))
    losses = []
    for _ in range(3):
        for at in range(0, len(x), 32):
            r = model.train_on_batch(x[at:at + 32], y[at:at + 32])
            losses.append(float(np.ravel(r)[0]))
    np.save(os.path.join(out, f"{name}.losses.npy"), np.array(losses, dtype=np.float32))
    model.save_weights(os.path.join(out, f"{name}.final.weights.h5"))
    print(name, "keras", keras.__version__, keras.backend.backend(), len(losses), "steps, last loss", losses[-1])


run(model, "bn_mlp")
keras.utils.set_random_seed(8)
ln = keras.Sequential(
    [
        keras.Input((32,)),
        L.Dense(24),
        L.LayerNormalization(),
        L.ReLU(),
        L.Reshape((4, 6)),
        L.LayerNormalization(axis=[1, 2]),
        L.Flatten(),
        L.LayerNormalization(center=False, epsilon=0.01),
        L.Dense(1, activation="sigmoid"),
    ],
    name="ln_mlp",
)
ln.compile(optimizer=keras.optimizers.Adam(learning_rate=0.005), loss="binary_crossentropy", metrics=["accuracy"])
run(ln, "ln_mlp")

#!/usr/bin/env python3
"""Keras's own run of a transformer encoder, as the fixture of tests/train.rs
(`a_transformer_encoder_trains_as_keras`):
    KERAS_BACKEND=jax python3 scripts/keras_attention_run.py tests/fixtures/training/attention
The data (tokens.train_x.npy, tokens.train_y.npy): 128 sequences of 8 steps of 16 features from
a fixed seed; the class (0-2) is which of three groups of 5 features has the largest sum over
the last half of the sequence.
- encoder: causal MultiHeadAttention(4 heads, key_dim 4) + residual + LayerNormalization, a
  feed-forward block (Dense 32 relu, Dense 16) + residual + LayerNormalization, a second
  (bidirectional) attention block, GlobalAveragePooling1D, Dense(3, softmax); Adam(0.002),
  sparse categorical cross-entropy.
Saved compiled before training (encoder.keras), then 3 epochs of train_on_batch in batches of 32
in file order: encoder.losses.npy (each batch's loss) and encoder.final.weights.h5 (weights and
optimizer state)."""
import os, sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import keras

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(21)
x = rng.normal(size=(128, 8, 16)).astype("float32")
y = x[:, 4:, :15].sum(axis=1).reshape(128, 3, 5).sum(axis=2).argmax(axis=1).astype("int32")
np.save(os.path.join(out, "tokens.train_x.npy"), x)
np.save(os.path.join(out, "tokens.train_y.npy"), y)
L = keras.layers

keras.utils.set_random_seed(22)
t = keras.Input((8, 16))
a = L.MultiHeadAttention(num_heads=4, key_dim=4)(t, t, use_causal_mask=True)
h = L.LayerNormalization(epsilon=1e-6)(L.Add()([t, a]))
f = L.Dense(32, activation="relu")(h)
h = L.LayerNormalization(epsilon=1e-6)(L.Add()([h, L.Dense(16)(f)]))
a = L.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
h = L.LayerNormalization(epsilon=1e-6)(L.Add()([h, a]))
p = L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(h))
model = keras.Model(t, p, name="encoder")
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.002),
              loss="sparse_categorical_crossentropy")
model.save(os.path.join(out, "encoder.keras"))
losses = []
for _ in range(3):
    for at in range(0, len(x), 32):
        r = model.train_on_batch(x[at:at + 32], y[at:at + 32])
        losses.append(float(np.ravel(r)[0]))
np.save(os.path.join(out, "encoder.losses.npy"), np.array(losses, dtype=np.float32))
model.save_weights(os.path.join(out, "encoder.final.weights.h5"))
print("encoder", "keras", keras.__version__, keras.backend.backend(), len(losses),
      "steps, losses", losses[0], "->", losses[-1])

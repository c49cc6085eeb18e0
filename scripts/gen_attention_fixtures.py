"""Generates tests/fixtures/layers/attention.*: a Keras 3 model of the attention layers forgec
imports (a transformer encoder block, causal self-attention, cross-attention with its own key),
and tests/fixtures/layers/gqa.*: GroupedQueryAttention, and
tests/fixtures/layers/norm_attention.*: Attention (dot and concat scores, causal),
AdditiveAttention, UnitNormalization, GroupNormalization, LayerNormalization(rms_scaling=True),
saved as .keras and .json + .weights.h5, with fixed inputs, Keras's outputs and summary, as
scripts/gen_layer_fixtures.py saves its zoos. Needs keras 3.15 and a backend (jax will do):

    pip install keras==3.15.1 jax jaxlib
    KERAS_BACKEND=jax python scripts/gen_attention_fixtures.py tests/fixtures/layers
"""
import os, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
# The summary table as wide as the other fixtures' (rich sizes it to the terminal).
os.environ.setdefault("COLUMNS", "200")
import numpy as np
import keras
from keras import layers as L

out = sys.argv[1]
rng = np.random.default_rng(11)
keras.utils.set_random_seed(11)

import keras_fixture_save as kfs  # noqa: E402 (beside this script)

kfs.rng, kfs.out = rng, out
save = kfs.save

x = keras.Input((8, 16), name="tokens")
c = keras.Input((5, 12), name="context")
# A transformer encoder block (post-norm, as Keras's examples write it).
a = L.MultiHeadAttention(num_heads=4, key_dim=4, dropout=0.1, name="self_attention")(x, x)
h = L.LayerNormalization(epsilon=1e-6, name="norm1")(L.Add()([x, a]))
f = L.Dense(32, activation="relu", name="ffn1")(h)
f = L.Dense(16, name="ffn2")(f)
h = L.LayerNormalization(epsilon=1e-6, name="norm2")(L.Add()([h, f]))
pooled = L.GlobalAveragePooling1D()(h)
cls = L.Dense(3, activation="softmax", name="classes")(pooled)
# Causal self-attention, no biases. (A value_dim apart from key_dim fails in Keras 3.15 itself
# on the jax backend, whose dot_product_attention wants one head size.)
causal = L.MultiHeadAttention(num_heads=2, key_dim=8, use_bias=False,
                              name="causal")(h, h, use_causal_mask=True)
# Cross-attention to a context of another length and width, with an output width of its own,
# and one whose key is not its value.
cross = L.MultiHeadAttention(num_heads=2, key_dim=4, output_shape=10, name="cross")(h, c)
k = L.Dense(7, name="key_proj")(c)
keyed = L.MultiHeadAttention(num_heads=1, key_dim=3, name="keyed")(h, c, k)
model = keras.Model([x, c], [cls, causal, cross, keyed], name="attention")
save("attention", model, [rng.normal(0, 1, (3, 8, 16)).astype("float32"),
                          rng.normal(0, 1, (3, 5, 12)).astype("float32")])


x = keras.Input((6, 12), name="seq")
v = keras.Input((4, 12), name="memory")
img = keras.Input((5, 5, 8), name="image")
d = L.Attention(name="dot")([x, v])
s = L.Attention(use_scale=True, name="scaled_causal")([x, x], use_causal_mask=True)
c = L.Attention(use_scale=True, score_mode="concat", name="concat")([x, v, L.Dense(12, name="kp")(v)])
ad = L.AdditiveAttention(name="additive")([x, v])
an = L.AdditiveAttention(use_scale=False, name="additive_plain")([x, x], use_causal_mask=True)
u = L.UnitNormalization(name="unit")(L.Add()([d, s, c, ad, an]))
u2 = L.UnitNormalization(axis=[1, 2], name="unit_2axes")(x)
g = L.GroupNormalization(groups=4, name="group")(img)
g1 = L.GroupNormalization(groups=8, center=False, epsilon=1e-5, name="group_nocenter")(img)
r = L.LayerNormalization(rms_scaling=True, name="rms")(x)
model = keras.Model([x, v, img], [u, u2, g, g1, r], name="norm_attention")
save("norm_attention", model, [rng.normal(0, 1, (3, 6, 12)).astype("float32"),
                               rng.normal(0, 1, (3, 4, 12)).astype("float32"),
                               rng.normal(1, 2, (3, 5, 5, 8)).astype("float32")])

# GroupedQueryAttention (Keras names the class GroupQueryAttention in keras.layers): 4 query
# heads sharing 2 key/value heads, self (causal), and 6 query heads sharing one, cross.
x = keras.Input((7, 16), name="seq")
m = keras.Input((5, 16), name="memory")
g = L.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2,
                            name="gqa_self")(x, x, use_causal_mask=True)
h = L.LayerNormalization(name="norm")(L.Add()([x, g]))
cq = L.GroupQueryAttention(head_dim=3, num_query_heads=6, num_key_value_heads=1,
                             use_bias=False, name="gqa_cross")(h, m)
model = keras.Model([x, m], [h, cq], name="gqa")
save("gqa", model, [rng.normal(0, 1, (2, 7, 16)).astype("float32"),
                    rng.normal(0, 1, (2, 5, 16)).astype("float32")])

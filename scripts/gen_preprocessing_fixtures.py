"""Generates tests/fixtures/layers/preprocessing.*: the image preprocessing layers that live
inside models (Resizing up and down with bilinear and nearest interpolation, CenterCrop;
not bicubic, whose border pixels Keras computes one way on jax and another on TensorFlow, the
backend forgec follows there), saved as scripts/gen_attention_fixtures.py saves its models. Needs keras 3.15 and
a backend (jax will do):

    pip install keras==3.15.1 jax jaxlib
    KERAS_BACKEND=jax python scripts/gen_preprocessing_fixtures.py tests/fixtures/layers
"""
import os, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("COLUMNS", "200")
import numpy as np
import keras
from keras import layers as L

import keras_fixture_save as kfs  # noqa: E402 (beside this script)

kfs.out = sys.argv[1]
kfs.rng = np.random.default_rng(31)
keras.utils.set_random_seed(31)

x = keras.Input((9, 11, 3), name="image")
outs = [
    L.Resizing(6, 7, name="down_bilinear")(x),
    L.Resizing(14, 17, name="up_bilinear")(x),
    L.Resizing(5, 4, interpolation="nearest", name="down_nearest")(x),
    L.Resizing(13, 16, interpolation="nearest", name="up_nearest")(x),
    L.CenterCrop(5, 8, name="crop")(x),
    L.CenterCrop(6, 6, name="crop_even")(x),
]
model = keras.Model(x, outs, name="preprocessing")
kfs.save("preprocessing", model, [kfs.rng.normal(0, 1, (2, 9, 11, 3)).astype("float32")])

"""Generates tests/fixtures/tfkeras: tf.keras 2 models (nested, shared, recurrent, legacy
activations) saved as .tfkeras.json + .tfkeras.h5 (save_weights) and .tfkeras.full.h5, with a
fixed input and tf.keras's output of the reloaded model. Needs tf_keras 2.21 + tensorflow 2.21:

    /tmp/kvenv/bin/pip install tensorflow-cpu==2.21.0 tf_keras==2.21.0
    /tmp/kvenv/bin/python scripts/gen_tfkeras_fixtures.py tests/fixtures/tfkeras
"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tf_keras as keras
from tf_keras import layers as L

out = sys.argv[1]
rng = np.random.default_rng(11)
keras.utils.set_random_seed(11)


def save(name, model, x):
    for w in model.weights:
        v = w.numpy()
        noise = rng.normal(0, 0.2, v.shape).astype(v.dtype)
        w.assign(np.abs(v + noise) + 0.5 if "variance" in w.name else v + noise)
    open(f"{out}/{name}.tfkeras.json", "w").write(model.to_json())
    model.save_weights(f"{out}/{name}.tfkeras.h5")
    model.save(f"{out}/{name}.tfkeras.full.h5")
    model = keras.models.load_model(f"{out}/{name}.tfkeras.full.h5", compile=False)
    np.save(f"{out}/{name}.input.npy", x)
    np.save(f"{out}/{name}.keras_out.npy", model.predict(x, verbose=0))
    print(name, model.count_params())


x = keras.Input((6, 4))
seq = L.Bidirectional(L.LSTM(3, return_sequences=True))(x)
g = L.GRU(5, recurrent_activation="sigmoid")(seq)
shared = L.Dense(5, activation="hard_sigmoid", name="shared")
h = shared(shared(g))
inner = keras.Sequential([L.Dense(4, input_shape=(5,)), L.LeakyReLU(alpha=0.2), L.BatchNormalization(), L.Dense(2, activation="softmax")], name="inner")
y = inner(h)
save("tf_nested_recurrent", keras.Model(x, y, name="tf_nested_recurrent"), rng.normal(0, 1, (3, 6, 4)).astype("float32"))

x = keras.Input((10, 10, 2))
y = L.Conv2D(4, 3, padding="same", activation="relu")(x)
y = L.DepthwiseConv2D(3, strides=2)(y)
y = L.SeparableConv2D(3, 2, activation="elu")(y)
y = L.GlobalAveragePooling2D()(y)
save("tf_conv", keras.Model(x, y, name="tf_conv"), rng.normal(0, 1, (2, 10, 10, 2)).astype("float32"))

"""Generates tests/fixtures/layers: small Keras 3 models covering the layers and activations
forgec imports, each saved as .keras, .json + .weights.h5, with a fixed input, Keras's output
and Keras's summary. Needs keras 3.15 + tensorflow 2.21 (not needed to run the tests):

    python -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install tensorflow-cpu==2.21.0 keras==3.15.1
    /tmp/kvenv/bin/python scripts/gen_layer_fixtures.py tests/fixtures/layers
"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
from keras import layers as L

out = sys.argv[1]
rng = np.random.default_rng(7)
keras.utils.set_random_seed(7)


def perturb(model):
    # Non-trivial weights everywhere (biases, BN stats, ...), so every weight matters.
    for w in model.weights:
        v = w.numpy()
        if np.issubdtype(v.dtype, np.floating):
            noise = rng.normal(0, 0.2, v.shape).astype(v.dtype)
            if "variance" in w.path:
                v = np.abs(v + noise) + 0.5
            else:
                v = v + noise
            w.assign(v)


def save(name, model, inputs):
    perturb(model)
    model.save(f"{out}/{name}.keras")
    model.save_weights(f"{out}/{name}.weights.h5")
    open(f"{out}/{name}.json", "w").write(model.to_json())
    # The reference is what Keras computes from the saved file (layers such as Normalization
    # cache state in memory that only a reload brings in line with the saved weights).
    model = keras.saving.load_model(f"{out}/{name}.keras", compile=False)
    ys = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    if not isinstance(ys, (list, tuple)):
        ys = [ys]
    for i, x in enumerate(inputs):
        np.save(f"{out}/{name}.input.{i}.npy", x)
    for i, y in enumerate(ys):
        np.save(f"{out}/{name}.keras_out.{i}.npy", np.asarray(y))
    lines = []
    model.summary(print_fn=lambda s, line_break=True: lines.append(s))
    open(f"{out}/{name}.summary.txt", "w").write("".join(l if l.endswith("\n") else l + "\n" for l in lines))
    print(name, model.count_params())


def f32(*shape):
    return rng.normal(0, 1, shape).astype("float32")


# Convolutions and pooling, 1D/2D/3D.
x = keras.Input((12, 12, 3))
y = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
y = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, activation="elu")(y)
y = L.Conv2DTranspose(5, 3, strides=2, padding="same", activation="selu")(y)
y = L.Conv2DTranspose(4, 2, strides=2, padding="valid")(y)
y = L.ZeroPadding2D(((1, 2), (0, 1)))(y)
y = L.Cropping2D(((2, 1), (1, 0)))(y)
y = L.AveragePooling2D(3, strides=2, padding="same")(y)
y = L.UpSampling2D((2, 1))(y)
y = L.DepthwiseConv2D(3, depth_multiplier=2, dilation_rate=2, activation="gelu")(y)
y = L.Conv2D(6, 3, groups=2, padding="valid", activation="swish")(y)
y = L.MaxPooling2D(2)(y)
y = L.GlobalMaxPooling2D()(y)
save("conv2d_zoo", keras.Model(x, y, name="conv2d_zoo"), [f32(3, 12, 12, 3)])

x = keras.Input((20, 4))
y = L.Conv1D(6, 3, padding="causal", dilation_rate=2, activation="tanh")(x)
y = L.ZeroPadding1D(2)(y)
y = L.SeparableConv1D(5, 3, activation="softplus")(y)
y = L.AveragePooling1D(2)(y)
y = L.Cropping1D((1, 1))(y)
y = L.UpSampling1D(2)(y)
y = L.MaxPooling1D(3, strides=2, padding="same")(y)
y = L.GlobalAveragePooling1D()(y)
save("conv1d_zoo", keras.Model(x, y, name="conv1d_zoo"), [f32(2, 20, 4)])

x = keras.Input((6, 6, 6, 2))
y = L.Conv3D(3, 3, padding="same", activation="relu6")(x)
y = L.MaxPooling3D(2)(y)
y = L.GlobalAveragePooling3D()(y)
save("conv3d", keras.Model(x, y, name="conv3d"), [f32(2, 6, 6, 6, 2)])

# Recurrent layers.
x = keras.Input((7, 5))
a = L.GRU(6, return_sequences=True)(x)
b = L.GRU(4, reset_after=False, go_backwards=True)(a)
c = L.SimpleRNN(3, activation="relu")(x)
d = L.Bidirectional(L.LSTM(4, return_sequences=True))(x)
d = L.Bidirectional(L.GRU(3), merge_mode="sum")(d)
e = L.TimeDistributed(L.Dense(2, activation="sigmoid"))(a)
e = L.Flatten()(e)
y = L.Concatenate()([b, c, d, e])
save("recurrent", keras.Model(x, y, name="recurrent"), [f32(3, 7, 5)])

# Reshaping, merging, normalization, and the activation layers.
xa = keras.Input((4, 6), name="a")
xb = keras.Input((6,), name="b")
r = L.Reshape((6, 4))(xa)
r = L.Permute((2, 1))(r)
rb = L.RepeatVector(4)(xb)
s = L.Subtract()([r, rb])
av = L.Average()([r, rb, s])
mx = L.Maximum()([r, rb])
mn = L.Minimum()([r, rb])
m = L.Multiply()([mx, mn])
ln = L.LayerNormalization()(L.Add()([av, m]))
ln2 = L.LayerNormalization(axis=[1, 2], center=False)(ln)
f = L.Flatten()(ln2)
d1 = L.Dense(8)(f)
act = L.LeakyReLU(negative_slope=0.1)(d1)
act = L.PReLU()(act)
act = L.ELU(alpha=0.5)(act)
act = L.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.2)(act)
dot = L.Dot(axes=1, normalize=True)([L.Dense(8)(xb), act])
bn = L.BatchNormalization(center=False)(act)
sm = L.Softmax()(bn)
y2 = L.Dot(axes=(1, 2))([r, L.Permute((2, 1))(rb)])
save("merge_reshape", keras.Model([xa, xb], [sm, dot, L.Flatten()(y2)], name="merge_reshape"), [f32(2, 4, 6), f32(2, 6)])

# Preprocessing layers, embedding, a shared layer and a nested model.
x = keras.Input((5,))
norm = L.Normalization()
norm.adapt(f32(64, 5) * 3 + 1)
h = L.Rescaling(0.5, offset=-1.0)(norm(x))
shared = L.Dense(5, activation="tanh", name="shared")
h = shared(shared(h))
inner = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="relu"), L.Dropout(0.3), L.Dense(3)], name="inner")
h = inner(h)
save("nested_shared", keras.Model(x, h, name="nested_shared"), [f32(4, 5)])

ids = keras.Input((6,), dtype="int32")
e = L.Embedding(30, 4)(ids)
e = L.GlobalAveragePooling1D()(e)
save("embedding", keras.Model(ids, L.Dense(2, activation="softmax")(e), name="embedding"),
     [rng.integers(0, 30, (3, 6)).astype("int32")])

# Every built-in activation, one Dense each, side by side.
acts = ["relu", "relu6", "sigmoid", "tanh", "softmax", "log_softmax", "softplus", "softsign", "elu", "selu",
        "celu", "gelu", "silu", "mish", "exponential", "hard_sigmoid", "hard_silu", "hard_tanh",
        "hard_shrink", "soft_shrink", "tanh_shrink", "leaky_relu", "log_sigmoid", "sparse_plus",
        "squareplus", "linear"]
x = keras.Input((4,))
outs = [L.Dense(4, activation=a, name=f"act_{a}")(x) for a in acts]
# glu halves the last axis, which Keras's own shape inference misses: give it its own output.
glu = L.Dense(4, activation="glu", name="act_glu")(x)
save("activations", keras.Model(x, [L.Concatenate()(outs), glu], name="activations"), [f32(5, 4) * 2])

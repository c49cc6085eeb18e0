#!/usr/bin/env python3
"""Writes a Keras 3 model with one strided Conv2DTranspose (3x3, stride 2, same padding, relu,
64 -> 32 channels on a 32x32 input, random weights from a fixed seed) and an input batch, for
timing transposed convolutions (the col2im path) with forgec bench:
    python3 scripts/conv_transpose_model.py DIR      (needs numpy and h5py)
    forgec bench DIR/upsample.json --batch 1,32 --threads 1,2
Built from tests/fixtures/layers/conv2d_zoo.json's Conv2DTranspose layer, so the JSON is what
Keras 3.15 writes."""
import json, os, sys

import h5py
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
m = json.load(open(os.path.join(here, "..", "tests", "fixtures", "layers", "conv2d_zoo.json")))
cfg = m["config"]
inp = [l for l in cfg["layers"] if l["class_name"] == "InputLayer"][0]
ct = [l for l in cfg["layers"] if l["class_name"] == "Conv2DTranspose"][0]
inp["config"]["batch_shape"] = [None, 32, 32, 64]
ct["config"].update(filters=32, strides=[2, 2], kernel_size=[3, 3], padding="same", activation="relu")
ct["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["input_layer", 0, 0]
ct["inbound_nodes"][0]["args"][0]["config"]["shape"] = [None, 32, 32, 64]
ct["build_config"] = {"input_shape": [None, 32, 32, 64]}
cfg.update(name="upsample", layers=[inp, ct], output_layers=["conv2d_transpose", 0, 0])
json.dump(m, open(os.path.join(out, "upsample.json"), "w"))
rng = np.random.default_rng(0)
with h5py.File(os.path.join(out, "upsample.weights.h5"), "w") as f:
    g = f.create_group("layers/conv2d_transpose/vars")
    g["0"] = (rng.standard_normal((3, 3, 32, 64)) * 0.05).astype(np.float32)
    g["1"] = (rng.standard_normal((32,)) * 0.05).astype(np.float32)
    f.create_group("optimizer/vars")
    f.create_group("vars")
np.save(os.path.join(out, "x.npy"), rng.standard_normal((32, 32, 32, 64)).astype(np.float32))
print(os.path.join(out, "upsample.json"))

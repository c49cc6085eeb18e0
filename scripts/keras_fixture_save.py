"""What the fixture scripts share (scripts/gen_attention_fixtures.py,
scripts/gen_preprocessing_fixtures.py): perturbing a model's weights and saving it as
tests/fixtures/layers saves its zoos (.keras, .json + .weights.h5, inputs, Keras's outputs and
summary)."""
import numpy as np
import keras

rng = None
out = None


def perturb(model):
    # Non-trivial weights everywhere (biases too), so every weight matters.
    for w in model.weights:
        v = w.numpy()
        w.assign(v + rng.normal(0, 0.2, v.shape).astype(v.dtype))


def save(name, model, inputs):
    perturb(model)
    model.save(f"{out}/{name}.keras")
    model.save_weights(f"{out}/{name}.weights.h5")
    open(f"{out}/{name}.json", "w").write(model.to_json())
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


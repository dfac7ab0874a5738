"""The same models in TensorFlow/Keras 2.15, side by side with housenum (run by train_speed.py for
throughput and by notebook_models.py for accuracy on the same data).

Runs in an interpreter that has TensorFlow, in its own venv since TF 2.15 needs numpy<2 (beside the
repository: `python -m venv ../tfenv && ../tfenv/bin/pip install tensorflow-cpu==2.15.1`). Prints
one JSON line: seconds per epoch, images per second, and the predicted digits of the test set when
the data file has one (`xt`, `yt`).

    python keras_reference.py DATA.npz MODEL EPOCHS BATCH THREADS [LR]
"""

from __future__ import annotations

import json
import sys
import time


def build(name: str, channels: int):
    from tensorflow import keras
    from tensorflow.keras import layers as L

    inp = keras.Input((32, 32, channels))
    if name in ("ann1", "ann2"):
        x = L.Flatten()(inp)
        widths = (64, 32) if name == "ann1" else (256, 128, "drop", 64, 64, 32, "bn")
        for w in widths:
            x = L.Dropout(0.2)(x) if w == "drop" else L.BatchNormalization()(x) if w == "bn" else \
                L.Dense(w, activation="relu")(x)
        out = L.Dense(10, activation="softmax")(x)
    elif name == "cnn1":
        x = L.LeakyReLU(0.1)(L.Conv2D(16, 3, padding="same")(inp))
        x = L.LeakyReLU(0.1)(L.Conv2D(32, 3, padding="same")(x))
        x = L.Flatten()(L.MaxPooling2D()(x))
        x = L.LeakyReLU(0.1)(L.Dense(32)(x))
        out = L.Dense(10, activation="softmax")(x)
    elif name == "cnn2":
        x = L.Conv2D(16, 3, padding="same")(inp)
        x = L.LeakyReLU(0.1)(x)
        x = L.Conv2D(32, 3, padding="same")(x)
        x = L.LeakyReLU(0.1)(x)
        x = L.MaxPooling2D()(x)
        x = L.BatchNormalization()(x)
        x = L.Conv2D(32, 3, padding="same")(x)
        x = L.LeakyReLU(0.1)(x)
        x = L.Conv2D(64, 3, padding="same")(x)
        x = L.LeakyReLU(0.1)(x)
        x = L.MaxPooling2D()(x)
        x = L.BatchNormalization()(x)
        x = L.Flatten()(x)
        x = L.Dense(32)(x)
        x = L.LeakyReLU(0.1)(x)
        x = L.Dropout(0.5)(x)
        out = L.Dense(10, activation="softmax")(x)
    elif name in ("resnet", "resnet_fast", "resnet_mid"):
        def bn_relu(t, relu=True):
            t = L.BatchNormalization()(t)
            return L.ReLU()(t) if relu else t

        x = bn_relu(L.Conv2D(32, 3, padding="same", use_bias=False)(inp))
        cin = 32
        widths, first_stride = {"resnet": ((32, 64, 128, 256), 1), "resnet_fast": ((64, 128, 256), 2),
                                "resnet_mid": ((48, 96, 192), 2)}[name]
        for i, w in enumerate(widths):
            stride = first_stride if i == 0 else 2
            y = bn_relu(L.Conv2D(w, 3, stride, padding="same", use_bias=False)(x))
            y = bn_relu(L.Conv2D(w, 3, padding="same", use_bias=False)(y), relu=False)
            skip = x if (stride == 1 and cin == w) else bn_relu(
                L.Conv2D(w, 1, stride, use_bias=False)(x), relu=False)
            x = L.ReLU()(L.Add()([y, skip]))
            cin = w
        x = L.GlobalAveragePooling2D()(x)
        out = L.Dense(10, activation="softmax")(x)
    else:
        raise SystemExit(f"no Keras version of {name}")
    return keras.Model(inp, out)


def main() -> None:
    # no argparse: its callers pass positional arguments, as the usage line says
    if "--help" in sys.argv or "-h" in sys.argv:
        print(__doc__)
        return
    if len(sys.argv) not in (6, 7):
        raise SystemExit(__doc__)
    data_path, name, epochs, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        int(sys.argv[5])
    lr = float(sys.argv[6]) if len(sys.argv) > 6 else 1e-3
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(42)
    with np.load(data_path) as f:
        x, y, xv, yv = (f[k] for k in ("x", "y", "xv", "yv"))
        test = (f["xt"].astype("float32") / 255, f["yt"]) if "xt" in f.files else None
    x, xv = x.astype("float32") / 255, xv.astype("float32") / 255
    y, yv = tf.keras.utils.to_categorical(y, 10), tf.keras.utils.to_categorical(yv, 10)
    model = build(name, x.shape[-1])
    model.compile(optimizer=tf.keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=(xv, yv), verbose=0, callbacks=[Timer()])
    steady = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    result = {"framework": "keras " + tf.__version__, "model": name, "params": model.count_params(),
              "epoch_seconds": times, "images_per_second": len(x) / steady}
    if test is not None:  # predictions on a test set, for accuracy comparisons on the same data
        result["test_predictions"] = model.predict(test[0], batch_size=512, verbose=0).argmax(1).tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""
StarDist 2D as a peer of the comparison, trained from scratch by StarDist's own 2D training
example (``examples/2D/2_training.ipynb`` of the stardist repository); runs in ``.venv-peers``.
docs/peers.md lists each parameter and where it comes from. In short:

- images normalised per channel to the percentiles 1 and 99.8 (``csbdeep.utils.normalize``,
  ``axis=(0, 1)``), label holes filled (``fill_label_holes``);
- 15 % of the training images held out as StarDist's validation set (a permutation drawn from
  the run's seed; the example draws it from seed 42), for the validation loss, the weights
  kept (``weights_best.h5``) and the threshold optimisation;
- ``Config2D(n_rays=32, grid=(2, 2), n_channel_in=3)`` and the rest of Config2D's defaults:
  256x256 patches, batch 4, Adam at 3e-4, ReduceLROnPlateau(0.5, patience 40), 100 steps per
  epoch, 400 epochs at most; TensorBoard logging off (it logs, it does not train);
- the example's augmenter: random flips and 90-degree rotations, intensity x U(0.6, 2) +
  U(-0.2, 0.2), Gaussian noise of sd 0.02 x U(0, 1);
- training stops when the budget is spent (CPU time: ``--minutes`` on ``--cores`` busy
  cores; checked after every batch); then the
  best weights by validation loss are kept, as StarDist's ``train`` does, and
  ``optimize_thresholds`` is run on the held-out images;
- prediction: ``predict_instances`` of the normalised image with ``n_tiles`` from
  ``_guess_n_tiles``, as the example does.

    python tools/peers/stardist_peer.py train --train-data D --run-dir R --seed 0 --minutes 60 --cores 2 --threads 2
    python tools/peers/stardist_peer.py predict --data D --run-dir R --threads 2
"""

import os
import random
import sys
import time

import numpy as np
import peer_common

MODEL_NAME = "stardist"
VALIDATION_FRACTION = 0.15  # the example's split
N_RAYS = 32
GRID = (2, 2)


def _set_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def normalize_image(image):
    """(H, W, 3) uint8 -> float32 normalised per channel to the percentiles 1 and 99.8."""
    from csbdeep.utils import normalize

    return normalize(image, 1, 99.8, axis=(0, 1))


def augmenter(x, y):
    """The 2D example's augmentation of one (image, labels) pair."""
    # random permutation of the two spatial axes, then a random flip of each
    perm = tuple(np.random.permutation(2))
    x = x.transpose(perm + (2,))
    y = y.transpose(perm)
    for axis in (0, 1):
        if np.random.rand() > 0.5:
            x = np.flip(x, axis=axis)
            y = np.flip(y, axis=axis)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    sigma = 0.02 * np.random.uniform(0, 1)
    return x + sigma * np.random.normal(0, 1, x.shape), y


def _split(num_images, seed):
    order = np.random.RandomState(seed).permutation(num_images)
    num_val = max(1, int(round(VALIDATION_FRACTION * num_images)))
    return order[:-num_val], order[-num_val:]


def _budget_callback(model, budget, run_dir, state):
    """Stops the training when the budget is spent; records the state after each epoch's
    checkpoints (it is the last callback)."""
    from tensorflow import keras

    class BudgetCallback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if budget.exhausted():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            state["epochs_done"] += 1
            state["cpu_seconds"] = budget.spent()
            state["learning_rate"] = float(
                keras.backend.get_value(self.model.optimizer.learning_rate)
            )
            for callback in model.callbacks:
                if (
                    isinstance(callback, keras.callbacks.ModelCheckpoint)
                    and callback.save_best_only
                ):
                    state["best_val_loss"] = float(callback.best)
                if isinstance(callback, keras.callbacks.ReduceLROnPlateau):
                    state["plateau"] = {
                        "best": float(callback.best),
                        "wait": int(callback.wait),
                        "cooldown_counter": int(callback.cooldown_counter),
                    }
            state["history"].append({k: float(v) for k, v in (logs or {}).items()})
            peer_common.write_checkpoint_state(run_dir, state, f"{MODEL_NAME}/weights_now.h5")

    return BudgetCallback()


def _restore_training_state(model, state):
    from tensorflow import keras

    keras.backend.set_value(model.keras_model.optimizer.learning_rate, state["learning_rate"])
    for callback in model.callbacks:
        if isinstance(callback, keras.callbacks.ModelCheckpoint) and callback.save_best_only:
            callback.best = state.get("best_val_loss", callback.best)
        if isinstance(callback, keras.callbacks.ReduceLROnPlateau) and "plateau" in state:
            callback.best = state["plateau"]["best"]
            callback.wait = state["plateau"]["wait"]
            callback.cooldown_counter = state["plateau"]["cooldown_counter"]


def train(args):
    _set_threads(args.threads)
    import tensorflow as tf
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    run_dir = args.run_dir
    os.makedirs(run_dir, exist_ok=True)
    state = peer_common.read_state(run_dir)
    if state is not None and state.get("thresholds_done"):
        print("stardist: training already finished", flush=True)
        return
    _, images, labels = peer_common.load_split(args.train_data, with_labels=True)
    images = [normalize_image(x) for x in images]
    labels = [fill_label_holes(y) for y in labels]
    train_ids, val_ids = _split(len(images), args.seed)
    x_train, y_train = [images[i] for i in train_ids], [labels[i] for i in train_ids]
    x_val, y_val = [images[i] for i in val_ids], [labels[i] for i in val_ids]

    if state is None:
        state = {
            "peer": "stardist",
            "seed": args.seed,
            "minutes": args.minutes,
            "epochs_done": 0,
            "cores": args.cores,
            "cpu_seconds": 0.0,
            "training_done": False,
            "history": [],
            "num_train_images": len(train_ids),
            "num_val_images": len(val_ids),
        }
        config = Config2D(
            n_rays=N_RAYS, grid=GRID, n_channel_in=3, use_gpu=False, train_tensorboard=False
        )
        model = StarDist2D(config, name=MODEL_NAME, basedir=run_dir)
    else:
        model = StarDist2D(None, name=MODEL_NAME, basedir=run_dir)
    budget = peer_common.ComputeBudget(args.minutes, args.cores, state["cpu_seconds"])
    epochs_left = model.config.train_epochs - state["epochs_done"]
    # a first attempt trains at least one batch, whatever the budget
    if (
        not state["training_done"]
        and epochs_left > 0
        and (state["epochs_done"] == 0 or not budget.exhausted())
    ):
        seed = args.seed + 1000 * state["epochs_done"]  # a resumed run draws new patches
        random.seed(seed)
        np.random.seed(seed)
        tf.random.set_seed(seed)
        model.prepare_for_training()
        if state["epochs_done"]:
            # Keras writes weights_now.h5 after every epoch; StarDist renames it to
            # weights_last.h5 when a training ends
            now = os.path.join(run_dir, MODEL_NAME, "weights_now.h5")
            model.load_weights("weights_now.h5" if os.path.isfile(now) else "weights_last.h5")
            _restore_training_state(model, state)
        model.callbacks.append(_budget_callback(model, budget, run_dir, state))
        model.train(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            augmenter=augmenter,
            seed=seed,
            epochs=epochs_left,
        )
    state["training_done"] = True
    state["stopped_by"] = "budget" if budget.exhausted() else "epochs"
    state["cpu_seconds"] = budget.spent()
    # the weights StarDist keeps: the best validation loss (train() loads them when it ends)
    model.load_weights("weights_best.h5")
    start = time.perf_counter()
    model.optimize_thresholds(x_val, y_val)
    state["thresholds"] = dict(model.thresholds._asdict())
    state["threshold_seconds"] = time.perf_counter() - start
    state["thresholds_done"] = True
    peer_common.write_checkpoint_state(run_dir, state, f"{MODEL_NAME}/weights_best.h5")


def load_predictor(run_dir, threads):
    """``(H, W, 3) uint8 -> (H, W)`` labels of the run's trained model and thresholds."""
    _set_threads(threads)
    from stardist.models import StarDist2D

    model = StarDist2D(None, name=MODEL_NAME, basedir=run_dir)  # weights_best.h5, thresholds.json

    def predict_labels(image):
        x = normalize_image(image)
        labels, _ = model.predict_instances(
            x, n_tiles=model._guess_n_tiles(x), show_tile_progress=False
        )
        return labels

    return predict_labels


if __name__ == "__main__":
    sys.exit(peer_common.main(__doc__.split("\n\n")[0], train, load_predictor))

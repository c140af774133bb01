#!/usr/bin/env python
"""
Cellpose 3 as a peer of the comparison: its CPnet trained from scratch by the recipe of
``cellpose.train.train_seg`` (Cellpose 3.1.1.3) with its defaults; runs in ``.venv-peers``.
docs/peers.md lists each parameter and where it comes from. In short:

- ``CellposeModel(pretrained_model=False, nchan=2)``: CPnet [2, 32, 64, 128, 256] with
  random weights (nothing is downloaded); ``diam_mean`` = the mean over the training images
  of their median mask diameter (``cellpose.utils.diameters``, images with at least
  ``min_train_masks`` = 5 masks), the diameter train_seg stores as ``diam_labels``;
- channels [0, 0] (grey, Cellpose's setting for nuclei), images normalised to the
  percentiles 1 and 99 (Cellpose's default), flows from the label images
  (``dynamics.labels_to_flows``), images with fewer than 5 masks left out;
- AdamW, learning rate 0.005, weight decay 1e-5, batch 8, 224x224 patches, rescale on
  (each image resized so that its nuclei have ``diam_mean``, scale jitter 0.5), random
  rotations and flips (``transforms.random_rotate_and_resize``), train_seg's loss
  (``_loss_fn_seg``);
- train_seg's learning-rate schedule (linear warm-up over 10 epochs from 0, then constant;
  halved 10 times at the end for more than 100 epochs) for the number of epochs that fits
  the budget, estimated from the first epoch's CPU time; train_seg's default of 2000 epochs does
  not fit an hour on a CPU. The budget (CPU time: ``--minutes`` on ``--cores`` busy cores)
  is checked after every batch;
- each epoch's image order and augmentation drawn from NumPy seeded by (run seed, epoch)
  (train_seg seeds by the epoch alone), the weights' initialisation by the run seed;
- prediction: ``CellposeModel.eval`` with channels [0, 0] and its defaults (diameter None,
  so the images are not resized: ``diam_mean`` = ``diam_labels``; flow threshold 0.4, cell
  probability threshold 0, min size 15).

    python tools/peers/cellpose_peer.py train --train-data D --run-dir R --seed 0 --minutes 60 --cores 2 --threads 2
    python tools/peers/cellpose_peer.py predict --data D --run-dir R --threads 2
"""

import os
import sys
import time

import numpy as np  # noqa: E402
import peer_common  # noqa: E402

CHANNELS = [0, 0]
LEARNING_RATE = 0.005
WEIGHT_DECAY = 1e-5
BATCH_SIZE = 8
PATCH = 224
MIN_TRAIN_MASKS = 5
SCALE_RANGE = 0.5  # train_seg's scale jitter with rescale on
CHECKPOINT = "cellpose_checkpoint.pt"
MODEL_FILE = os.path.join("models", "cellpose_dsb")


def learning_rates(learning_rate, num_epochs):
    """train_seg's schedule: (num_epochs,) learning rate of each epoch."""
    rates = np.linspace(0, learning_rate, 10)
    rates = np.append(rates, learning_rate * np.ones(max(0, num_epochs - 10)))
    if num_epochs > 100:
        keep, step = (100, 10) if num_epochs > 300 else (50, 5)
        rates = rates[:-keep]
        for _ in range(10):
            rates = np.append(rates, rates[-1] / 2 * np.ones(step))
    return rates[:num_epochs]


def _torch(threads):
    import torch

    torch.set_num_threads(threads)
    return torch


def train(args):
    torch = _torch(args.threads)
    from cellpose import models, train as cp_train, transforms

    run_dir = args.run_dir
    os.makedirs(run_dir, exist_ok=True)
    state = peer_common.read_state(run_dir)
    if state is not None and state.get("training_done"):
        print("cellpose: training already finished", flush=True)
        return
    _, images, labels = peer_common.load_split(args.train_data, with_labels=True)
    device = torch.device("cpu")
    normalize_params = {**models.normalize_default, "normalize": True}
    processed = cp_train._process_train_test(
        train_data=images,
        train_labels=labels,
        min_train_masks=MIN_TRAIN_MASKS,
        channels=CHANNELS,
        normalize_params=normalize_params,
        device=device,
    )
    train_data, train_flows, diam_train = processed[0], processed[1], processed[5]
    if len(train_data) == 0:
        peer_common.fail(
            f"{args.train_data}: no training image has {MIN_TRAIN_MASKS} masks or more"
        )
    diam_mean = float(diam_train.mean())

    torch.manual_seed(args.seed)
    model = models.CellposeModel(gpu=False, pretrained_model=False, diam_mean=diam_mean, nchan=2)
    net = model.net
    net.diam_labels.data = torch.Tensor([diam_mean])
    optimizer = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    if state is None:
        state = {
            "peer": "cellpose",
            "seed": args.seed,
            "minutes": args.minutes,
            "epochs_done": 0,
            "num_epochs": None,
            "cores": args.cores,
            "cpu_seconds": 0.0,
            "training_done": False,
            "diam_mean": diam_mean,
            "num_train_images": len(train_data),
            "history": [],
        }
    else:
        # our own file; runs of older versions stored numpy scalars, which weights_only refuses
        checkpoint = torch.load(
            os.path.join(run_dir, CHECKPOINT), map_location="cpu", weights_only=False
        )
        net.load_state_dict(checkpoint["net"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    budget = peer_common.ComputeBudget(args.minutes, args.cores, state["cpu_seconds"])
    num_images = len(train_data)
    # a first attempt trains at least one batch, whatever the budget
    while (state["epochs_done"] == 0 or not budget.exhausted()) and (
        state["num_epochs"] is None or state["epochs_done"] < state["num_epochs"]
    ):
        epoch = state["epochs_done"]
        epoch_start, epoch_cpu_start = time.time(), budget.spent()
        # the schedule's first epochs do not depend on its length (warm-up over 10 epochs)
        rates = learning_rates(LEARNING_RATE, state["num_epochs"] or 10)
        for group in optimizer.param_groups:
            group["lr"] = float(rates[epoch])
        np.random.seed((args.seed * 100_003 + epoch) % 2**32)
        order = np.random.permutation(num_images)
        net.train()
        losses = []
        for start in range(0, num_images, BATCH_SIZE):
            indices = order[start : start + BATCH_SIZE]
            batch, flows = cp_train._get_batch(indices, data=train_data, labels=train_flows)
            rescale = diam_train[indices] / net.diam_mean.item()
            patches, targets = transforms.random_rotate_and_resize(
                batch, Y=flows, rescale=rescale, scale_range=SCALE_RANGE, xy=(PATCH, PATCH)
            )[:2]
            output = net(torch.from_numpy(patches).to(device))[0]
            loss = cp_train._loss_fn_seg(targets, output, device)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
            if budget.exhausted():
                break
        state["epochs_done"] = epoch + 1
        state["history"].append(
            {
                "epoch": epoch,
                "lr": float(rates[epoch]),
                "loss": float(np.mean(losses)),
                "seconds": time.time() - epoch_start,
                "cpu_seconds": budget.spent() - epoch_cpu_start,
            }
        )
        if state["num_epochs"] is None:
            # the schedule's length: the epochs that fit the budget at this epoch's pace
            state["num_epochs"] = max(
                10, 1 + int(budget.left() // (budget.spent() - epoch_cpu_start))
            )
        state["cpu_seconds"] = budget.spent()
        _save_checkpoint(torch, run_dir, net, optimizer)
        peer_common.write_checkpoint_state(run_dir, state, CHECKPOINT)
    state["training_done"] = True
    state["stopped_by"] = "budget" if budget.exhausted() else "epochs"
    state["cpu_seconds"] = budget.spent()
    os.makedirs(os.path.join(run_dir, "models"), exist_ok=True)
    net.save_model(os.path.join(run_dir, MODEL_FILE))
    peer_common.write_checkpoint_state(run_dir, state, CHECKPOINT)


def _save_checkpoint(torch, run_dir, net, optimizer):
    path = os.path.join(run_dir, CHECKPOINT)
    temporary = f"{path}.tmp{os.getpid()}"
    torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict()}, temporary)
    os.replace(temporary, path)


def load_predictor(run_dir, threads):
    """``(H, W, 3) uint8 -> (H, W)`` labels of the run's trained model."""
    _torch(threads)
    from cellpose import models

    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(path):
        peer_common.fail(f"{path}: no trained model (the training has not finished)")
    model = models.CellposeModel(gpu=False, pretrained_model=path, nchan=2)

    def predict_labels(image):
        masks = model.eval(image, channels=CHANNELS, channel_axis=2)[0]
        return masks

    return predict_labels


if __name__ == "__main__":
    sys.exit(peer_common.main(__doc__.split("\n\n")[0], train, load_predictor))

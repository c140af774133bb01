"""Nothing lost: tools/train_net.py killed with SIGKILL right after a checkpoint or in the middle
of writing one resumes to the end; metrics.json survives a kill; two-process CPU training (DDP
over GLOO). Trainings are tiny: Mask R-CNN++ with a narrow VGG bottom-up, 64 px inputs, a few
iterations, so that a run and its checkpoints (2 MB) take seconds."""

import json
import os
import pathlib
import signal

import pytest
import torch
from torch import nn

from maskrcnnpp.checkpoint import AtomicDetectionCheckpointer
from maskrcnnpp.config import setup_cfg
from maskrcnnpp.engine import drop_partial_last_line, read_metrics_json
from maskrcnnpp.utils.atomic_io import atomic_open

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick" / "mask_rcnn_VGG_NestedFPN.yaml"
NARROW = [
    "MODEL.VGG.STAGE_CHANNELS",
    "[8, 16, 16, 32, 32, 32]",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
]
TINY = NARROW + [
    "INPUT.SCALE_FACTOR_TRAIN",
    "(0.25, 0.25)",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "DATASETS.TEST",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
]

# Runs tools/train_net.py in this process and kills it with SIGKILL when it saves checkpoint
# KILL_AT: right after the save (KILL_WHEN=after), or halfway through writing the file,
# after its first half is on disk and before the rename (KILL_WHEN=during).
_KILLING_DRIVER = """
import io, os, runpy, signal, sys
import torch
from maskrcnnpp.checkpoint import checkpointer

kill_at, kill_when = os.environ["KILL_AT"], os.environ["KILL_WHEN"]
original_save = checkpointer.AtomicDetectionCheckpointer.save


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def write_half_then_die(obj, f, real_save=torch.save):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    die()


def save(self, name, **kwargs):
    if name != kill_at:
        return original_save(self, name, **kwargs)
    if kill_when == "during":
        checkpointer.torch.save = write_half_then_die
    original_save(self, name, **kwargs)
    die()


checkpointer.AtomicDetectionCheckpointer.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _iteration_of(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["iteration"]


def _assert_loads_into_model(checkpoint):
    from detectron2.modeling import build_model

    model = build_model(setup_cfg(str(CONFIG), NARROW))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)


@pytest.mark.parametrize(
    "kill_when,last_complete,resumes_at",
    [("after", "model_0000003.pth", 4), ("during", "model_0000001.pth", 2)],
)
def test_killed_at_a_checkpoint_then_resumed_to_the_end(
    tmp_path, kill_when, last_complete, resumes_at, run_script
):
    out = tmp_path / "run"
    args = [
        "--config-file",
        str(CONFIG),
        *TINY,
        "SOLVER.MAX_ITER",
        "6",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "OUTPUT_DIR",
        str(out),
    ]
    driver = tmp_path / "kill_at_checkpoint.py"
    driver.write_text(_KILLING_DRIVER)

    killed = run_script(
        "tools/train_net.py",
        *args,
        driver=driver,
        env={"KILL_AT": "model_0000003", "KILL_WHEN": kill_when},
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-3000:]
    assert (out / "last_checkpoint").read_text() == last_complete
    assert _iteration_of(out / last_complete) == resumes_at - 1
    leftovers = list(out.glob(".model_0000003.pth.*.tmp"))
    if kill_when == "during":
        assert not (out / "model_0000003.pth").exists()
        assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written file
    else:
        assert not leftovers
    # a kill while Detectron2 appends to metrics.json leaves half a line
    with open(out / "metrics.json", "a") as f:
        f.write('{"iteration": 3, "total_loss": 1.2, "loss_m')

    resumed = run_script("tools/train_net.py", "--resume", *args, timeout=300)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert f"[Checkpointer] Loading from {out / last_complete}" in log
    assert f"Starting training from iteration {resumes_at}" in log
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert _iteration_of(out / "model_final.pth") == 5  # MAX_ITER 6 reached
    _assert_loads_into_model(out / "model_final.pth")
    assert not list(out.glob(".*.tmp"))  # the killed save's temporary is gone
    lines = (out / "metrics.json").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [5]
    assert (out / "training_curves.png").stat().st_size > 1000


def test_two_process_cpu_training(tmp_path, run_script):
    out = tmp_path / "ddp"
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        CONFIG,
        "--num-gpus",
        "2",
        *TINY,
        "SOLVER.MAX_ITER",
        "3",
        "OUTPUT_DIR",
        out,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Rank of current process: 0. World size: 2" in log
    rank1_log = (out / "log.txt.rank1").read_text()
    assert "Rank of current process: 1. World size: 2" in rank1_log
    assert "Starting training from iteration 0" in rank1_log
    assert "Making batched data loader with batch_size=1" in rank1_log  # 2 images over 2 ranks
    # rank 0 writes the losses it gathered from both ranks; the one write at the end may split
    # them over iterations 1 and 2 on a loaded machine (a record per iteration, the loss in one)
    records = read_metrics_json(out / "metrics.json")
    assert records and all(r["iteration"] in (1, 2) for r in records), records
    assert any(r.get("total_loss", 0) > 0 for r in records), records
    assert _iteration_of(out / "model_final.pth") == 2
    _assert_loads_into_model(out / "model_final.pth")


def test_metrics_reader_tolerates_partial_line_and_keeps_resumed_records(tmp_path, caplog):
    path = tmp_path / "metrics.json"
    path.write_text(
        '{"iteration": 19, "total_loss": 3.0}\n{"iteration": 39, "total_loss": 2.0}\n'
        '{"iteration": 59, "total_lo\n'  # killed mid-write, then resumed from iteration 20
        '{"iteration": 39, "total_loss": 1.5, "segm/AP": 10.0}\n'
        '{"iteration": 59, "total_loss": 1.0}\n{"iteration": 62, "total_'
    )
    records = read_metrics_json(str(path))
    assert records == [
        {"iteration": 19, "total_loss": 3.0},
        {"iteration": 39, "total_loss": 1.5, "segm/AP": 10.0},
        {"iteration": 59, "total_loss": 1.0},
    ]
    assert "line 3" in caplog.text and "line 6" in caplog.text


def test_drop_partial_last_line(tmp_path):
    path = tmp_path / "metrics.json"
    assert drop_partial_last_line(str(path)) == 0  # absent
    path.write_text('{"iteration": 1}\n')
    assert drop_partial_last_line(str(path)) == 0  # complete
    path.write_text('{"iteration": 1}\n{"iter')
    assert drop_partial_last_line(str(path)) == len('{"iter')
    assert path.read_text() == '{"iteration": 1}\n'
    path.write_text("x" * 70000)  # one long line without newline, longer than a read block
    assert drop_partial_last_line(str(path)) == 70000 and path.read_text() == ""


def test_atomic_open_gives_normal_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "a.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*.tmp"))


def test_checkpointer_removes_temporaries_of_a_killed_save(tmp_path):
    stale = tmp_path / ".model_0000009.pth.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".model_0000019.pth.def456.tmp"  # another checkpoint's: left alone
    other.write_bytes(b"x")
    checkpointer = AtomicDetectionCheckpointer(nn.Linear(2, 3), save_dir=str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    assert not stale.exists() and other.exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 9


def test_truncated_checkpoint_is_named(tmp_path):
    checkpointer = AtomicDetectionCheckpointer(nn.Linear(2, 3), save_dir=str(tmp_path))
    checkpointer.save("model_final")
    data = (tmp_path / "model_final.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"not a PyTorch or Detectron2 checkpoint: .*cut\.pth \(truncated"
    ):
        checkpointer.load(str(tmp_path / "cut.pth"))

"""The DDP path: the same `housenum train`, launched by torchrun with 2 CPU processes (gloo)."""

import subprocess
import sys

from housenum.checkpoint import load_model, read_checkpoint


def test_torchrun_two_processes_train_one_model(tmp_path):
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "housenum.cli", "train", "--model", "cnn2", "--data", "synthetic:600", "--epochs", "2",
         "--device", "cpu", "--out", str(run)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert not any(k.startswith("module.") for k in state["model_state"])
    assert load_model(run).name == "cnn2"
    assert proc.stdout.count("best val_acc") == 2  # each rank reports; only rank 0 writes files

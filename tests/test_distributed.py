"""The DDP path: the same `housenum train`, launched by torchrun with 2 CPU processes (gloo)."""

import os
import subprocess
import sys

import pytest

from housenum.checkpoint import load_model, read_checkpoint
from housenum.train import TrainConfig, epoch_batches, train


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "housenum.cli", "train", "--device", "cpu", *args],
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},   # a rank that aborts shows where it was
        capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_train_one_model_on_uneven_shards(tmp_path):
    # 481 training digits: shards of 241 and 240 would give 16 and 15 batches of 16, and the rank with
    # fewer would leave the other waiting in its all-reduce; a last batch of 1 would fail BatchNorm
    run = tmp_path / "ddp"
    proc = torchrun("--model", "cnn2", "--data", "synthetic:601", "--epochs", "2", "--batch-size", "32",
                    "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert not any(k.startswith("module.") for k in state["model_state"])
    assert load_model(run).name == "cnn2"
    assert proc.stdout.count("best val_acc") == 1   # rank 0 reports, as it alone writes files
    assert f"best val_acc {state['best_val_acc']:.4f}" in proc.stdout


def test_two_processes_take_the_steps_of_one(tmp_path):
    """Each rank takes half of every batch and DDP averages the gradients: with no BatchNorm, dropout
    or augmentation, the losses are a single process's."""
    proc = torchrun("--model", "ann1", "--data", "synthetic:600", "--epochs", "3", "--batch-size", "32",
                    "--precision", "fp32", "--out", str(tmp_path / "ddp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train(TrainConfig(model="ann1", data="synthetic:600", epochs=3, batch_size=32, precision="fp32",
                               device="cpu"), tmp_path / "single", progress=False)
    both = read_checkpoint(tmp_path / "ddp" / "last.pt")["history"]
    for one, two in zip(single.history, both, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], abs=1e-5)
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    assert single.history[-1]["loss"] < single.history[0]["loss"] - 0.01   # it learned, so steps mattered


@pytest.mark.parametrize(("n", "batch", "world"), [(481, 32, 2), (480, 32, 2), (1025, 128, 2), (7, 6, 3),
                                                   (1, 128, 1), (129, 128, 1)])
def test_epoch_batches_cover_the_padded_shard_with_no_batch_of_one(n, batch, world):
    bounds = epoch_batches(n, batch, world)
    shard = -(-n // world)
    assert bounds[0][0] == 0 and bounds[-1][1] == shard
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(stop - start > 1 for start, stop in bounds) or shard == 1



RUN_CLI_WITH_AN_EXIT_HOOK = """
import atexit, sys
atexit.register(lambda: print("teardown ran"))
sys.argv = ["housenum", *sys.argv[1:]]
from housenum.cli import main
main()
"""


@pytest.mark.parametrize(("world", "args", "code", "says"), [
    ("1", ["--version"], 0, "housenum "), ("2", ["--version"], 0, "housenum "),
    ("2", ["data", "info", "no-such-data"], 2, "error: "),
])
def test_under_torchrun_the_cli_skips_teardown_but_keeps_its_exit_status_and_output(world, args, code, says):
    env = {**os.environ, "WORLD_SIZE": world, "RANK": "1"}
    proc = subprocess.run([sys.executable, "-c", RUN_CLI_WITH_AN_EXIT_HOOK, *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stdout + proc.stderr
    assert ("teardown ran" in proc.stdout) == (world == "1")   # gloo's threads can abort a rank's teardown

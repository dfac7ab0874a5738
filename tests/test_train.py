"""Train -> evaluate -> predict end to end on real digits, determinism, resume and atomic checkpoints."""

import math
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from housenum.checkpoint import load_model, read_checkpoint, save_checkpoint
from housenum.data import load_digits
from housenum.data import DigitData, DigitSet
from housenum.errors import DataFormatError, ModelError
from housenum.evaluate import evaluate_run
from housenum.models import create_model
from housenum.predict import predict_digits
from housenum import train as train_module
from housenum.train import (COSINE_WARMUP, TrainConfig, make_optimizer, make_scheduler, sam_second_gradient,
                            split_for_training, train, use_bf16)

FILES = ["best.pt", "last.pt", "config.json", "history.csv", "curves.png", "summary.txt"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small_npz):
    run = tmp_path_factory.mktemp("runs") / "cnn1"
    result = train(TrainConfig(model="cnn1", data=str(small_npz), epochs=4, batch_size=32), run, progress=False)
    return run, result


def test_run_folder_has_every_artifact(trained_run):
    run, result = trained_run
    for name in FILES:
        assert (run / name).stat().st_size > 0, name
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["epochs"], config["batch_size"], config["lr"]) == ("cnn1", 4, 32, 1e-3)
    assert len(result.history) == 4
    assert "Total params: 267,306" in (run / "summary.txt").read_text()
    header = (run / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,loss,acc,val_loss,val_acc,seconds")


def test_accuracy_beats_chance_on_real_digits(trained_run, small_npz):
    run, _ = trained_run
    result = evaluate_run(run, str(small_npz))
    majority = np.bincount(load_digits(str(small_npz)).test.labels).max() / result.n
    assert result.accuracy > majority + 0.1, (result.accuracy, majority)
    for name in ("report.txt", "metrics.json", "confusion.png", "mistakes.png"):
        assert (run / "eval" / name).stat().st_size > 0


def test_predict_reads_image_files_of_any_mode(trained_run, crops, tmp_path):
    run, _ = trained_run
    rgb = Image.fromarray(crops["X"][0]).resize((70, 90))
    paths = []
    for mode in ("RGB", "RGBA", "L", "P"):
        path = tmp_path / f"digit_{mode}.png"
        rgb.convert(mode).save(path)
        paths.append(path)
    jpeg = tmp_path / "digit.jpg"
    rgb.save(jpeg, quality=90)
    preds = predict_digits([*paths, jpeg], run, top_k=3)
    assert len(preds) == 5
    for p in preds:
        assert 0 <= p.digit <= 9 and len(p.top_k) == 3
        probs = [q for _, q in p.top_k]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5 and probs[0] == p.confidence
        assert p.top_k[0][0] == p.digit and len({d for d, _ in p.top_k}) == 3
    assert len({p.digit for p in preds[:2]}) == 1
    every = predict_digits(paths[:1], run, top_k=10)[0].top_k   # all ten digits: a distribution
    assert sorted(d for d, _ in every) == list(range(10)) and sum(q for _, q in every) == pytest.approx(1, abs=1e-4)


def test_same_seed_same_weights(small_npz, tmp_path):
    data = load_digits(str(small_npz))
    states = []
    for i in range(2):
        train(TrainConfig(model="cnn2", epochs=1, seed=7, threads=1), tmp_path / f"r{i}", data=data, progress=False)
        states.append(read_checkpoint(tmp_path / f"r{i}" / "last.pt")["model_state"])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    other = train(TrainConfig(model="cnn2", epochs=1, seed=8, threads=1), tmp_path / "r2", data=data,
                  progress=False)
    assert not torch.equal(read_checkpoint(other.run_dir / "last.pt")["model_state"]["0.weight"],
                           states[0]["0.weight"])


def test_a_run_records_the_data_it_was_given_and_checks_its_settings_first(small_npz, tmp_path):
    data = load_digits(small_npz)
    train(TrainConfig(model="ann1", epochs=1), tmp_path / "run", data=data, progress=False)   # names no data
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(small_npz)
    assert evaluate_run(tmp_path / "run", out_dir=tmp_path / "eval").n == len(data.test)
    with pytest.raises(TypeError, match="data= takes the loaded data"):
        train(TrainConfig(model="ann1", epochs=1), tmp_path / "x", data=str(small_npz))
    for bad in ({"epochs": 1.5}, {"batch_size": "8"}, {"threads": 1.0}):
        with pytest.raises(ModelError, match="must be a whole number"):
            train(TrainConfig(model="ann1", **bad), tmp_path / "y", data=data)
    assert not (tmp_path / "y").exists()


def test_resume_continues_to_more_epochs(small_npz, tmp_path):
    data = load_digits(str(small_npz))
    train(TrainConfig(model="ann1", epochs=1), tmp_path, data=data, progress=False)
    result = train(TrainConfig(model="ann1", epochs=3), tmp_path, data=data, resume=True, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_resume_is_the_same_run_as_one_straight_through_dropout_included(small_npz, tmp_path):
    """cnn2 has dropout, which draws from torch's global generator: last.pt carries it."""
    data = load_digits(str(small_npz))
    cfg = dict(model="cnn2", seed=3, threads=1)
    straight = train(TrainConfig(**cfg, epochs=2), tmp_path / "straight", data=data, progress=False)
    train(TrainConfig(**cfg, epochs=1), tmp_path / "split", data=data, progress=False)
    torch.manual_seed(999)                                  # another process's generator, as after a restart
    resumed = train(TrainConfig(**cfg, epochs=2), tmp_path / "split", data=data, resume=True, progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_resume_refuses_epochs_its_schedule_cannot_take(small_npz, tmp_path):
    data = load_digits(str(small_npz))
    train(TrainConfig(model="resnet_tiny", epochs=1, batch_size=256), tmp_path / "onecycle", data=data, progress=False)
    before = (tmp_path / "onecycle" / "config.json").read_text()
    with pytest.raises(ModelError, match="onecycle schedule spans its 1 epochs"):
        train(TrainConfig(model="resnet_tiny", epochs=3), tmp_path / "onecycle", data=data, resume=True,
              progress=False)
    assert (tmp_path / "onecycle" / "config.json").read_text() == before    # nothing touched
    train(TrainConfig(model="ann1", epochs=2), tmp_path / "constant", data=data, progress=False)
    with pytest.raises(ModelError, match="already trained 2 epochs"):
        train(TrainConfig(model="ann1", epochs=1), tmp_path / "constant", data=data, resume=True, progress=False)


def test_a_new_run_replaces_an_old_runs_files_only_once_its_first_epoch_is_saved(small_npz, tmp_path, monkeypatch):
    """Stopped in its first epoch, the new run leaves the old one whole; after it, none of the old files stay."""
    data = load_digits(str(small_npz))
    train(TrainConfig(model="ann1", epochs=2), tmp_path, data=data, progress=False)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.txt").write_text("ann1's evaluation")
    (tmp_path / "metrics.json").write_text("{}")   # `evaluate RUN --out RUN` puts it beside the run's files
    (tmp_path / "best.int8.onnx").write_bytes(b"ann1's export")   # stale once replaced
    (tmp_path / "notes.onnx").write_bytes(b"the user's own")      # not an export of the run: kept
    before = {name: (tmp_path / name).read_bytes() for name in FILES}
    evaluate = train_module._evaluate

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_evaluate", ctrl_c)     # Ctrl-C at the end of the first epoch
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(model="ann2", epochs=1), tmp_path, data=data, progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in FILES} == before
    assert load_model(tmp_path).name == "ann1" and (tmp_path / "eval" / "report.txt").exists()
    assert (tmp_path / "metrics.json").exists()

    rows = []
    monkeypatch.setattr(train_module, "_evaluate", evaluate)
    train(TrainConfig(model="ann2", epochs=2), tmp_path, data=data, progress=False,
          on_epoch=lambda row: rows.append(sorted(p.name for p in tmp_path.iterdir())))
    assert rows[0] == sorted([*FILES, "notes.onnx"])    # after epoch 1: the new run's files, no eval/ of ann1's
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "ann2"
    assert "ann2" in (tmp_path / "summary.txt").read_text()


def test_resuming_a_run_saved_before_precision_existed_keeps_it_in_fp32_on_a_cpu(small_npz, tmp_path, monkeypatch):
    data = load_digits(str(small_npz))
    train(TrainConfig(model="ann1", epochs=1, precision="fp32", device="cpu"), tmp_path, data=data, progress=False)
    state = read_checkpoint(tmp_path / "last.pt")
    del state["config"]["precision"]
    save_checkpoint(tmp_path / "last.pt", state)
    monkeypatch.setattr("housenum.train.cpu_has_bf16", lambda: True)  # where `auto` would now pick bf16
    result = train(TrainConfig(model="ann1", epochs=2), tmp_path, data=data, resume=True, progress=False)
    assert result.config.precision == "fp32"
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "fp32"


def test_strong_recipe_runs_with_augmentation_and_ema(tmp_path):
    result = train(TrainConfig(model="resnet", data="synthetic:400", epochs=1, batch_size=128), tmp_path,
                   progress=False)
    assert result.config.recipe == "strong" and result.config.augment and result.config.ema
    assert load_model(tmp_path).channels == 3


def test_optimizers_decay_only_weights_and_unknown_ones_are_named():
    model = create_model("resnet_tiny", 3)
    sgd = make_optimizer(model, TrainConfig(model="resnet_tiny", optimizer="sgd", lr=0.1, weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    decayed, plain = sgd.param_groups
    assert decayed["weight_decay"] == 5e-4 and all(p.ndim > 1 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in plain["params"])
    assert isinstance(make_optimizer(model, TrainConfig(model="resnet_tiny", lr=1e-3, weight_decay=0.05)),
                      torch.optim.AdamW)
    with pytest.raises(ModelError, match="unknown optimizer 'lamb'"):
        make_optimizer(model, TrainConfig(model="resnet_tiny", optimizer="lamb", lr=1e-3))


def test_sam_takes_the_gradient_uphill_and_puts_the_weights_back():
    """Loss sum(w^4)/4 has gradient w^3: SAM's gradient is the one at w + rho * w^3 / |w^3|, the
    weights end where they began, and batch norm's running statistics see only the first pass."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1, bias=False))
    w = net[1].weight
    x = torch.randn(16, 3)

    def loss_fn():
        net(x)                       # a training-mode pass: batch norm would update its statistics
        return (w ** 4).sum() / 4

    before, running = w.detach().clone(), net[0].running_mean.clone()
    loss_fn().backward()
    running_first = net[0].running_mean.clone()
    assert not torch.equal(running_first, running)
    sam_second_gradient(net, 0.1, loss_fn)
    g = before ** 3
    uphill = before + 0.1 * g / g.norm()
    assert torch.allclose(w.detach(), before, atol=1e-7)
    assert torch.allclose(w.grad, uphill ** 3, atol=1e-6) and not torch.allclose(w.grad, g)
    assert torch.equal(net[0].running_mean, running_first)
    with pytest.raises(ModelError, match="sam .* must be 0 or more"):
        TrainConfig(model="cnn1", sam=-0.05).resolved()


def test_cosine_schedule_warms_up_then_falls_to_zero_and_unknown_ones_are_refused():
    cfg = TrainConfig(model="cnn1", schedule="cosine", lr=0.01).resolved()
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([w], lr=cfg.lr)
    scheduler, lrs = make_scheduler(optimizer, cfg, 1000), []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warm = round(COSINE_WARMUP * 1000)
    assert lrs[0] == pytest.approx(0.01 / warm) and max(lrs) == pytest.approx(0.01) == lrs[warm - 1] == lrs[warm]
    assert all(a < b for a, b in zip(lrs[:warm - 1], lrs[1:warm]))          # rises through the warm-up
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))          # then only falls
    assert lrs[-1] < 1e-6 and lrs[warm + (1000 - warm) // 2] == pytest.approx(0.005, rel=1e-3)
    assert make_scheduler(optimizer, TrainConfig(model="cnn1", schedule="constant").resolved(), 10) is None
    with pytest.raises(ModelError, match="unknown schedule 'cosin'"):
        TrainConfig(model="cnn1", schedule="cosin").resolved()


def test_onecycle_schedule_steps_through_runs_of_any_length():
    """Torch's OneCycle divides by zero at 4 steps with a quarter of warm-up: tiny runs must train."""
    cfg = TrainConfig(model="cnn1", schedule="onecycle", lr=0.01).resolved()
    for total in range(1, 13):
        w = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([w], lr=cfg.lr, momentum=0.9)
        scheduler, lrs = make_scheduler(optimizer, cfg, total), []
        for _ in range(total):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert all(math.isfinite(lr) and 0 < lr <= 0.01 + 1e-12 for lr in lrs), (total, lrs)
        if total >= 3:
            assert lrs[0] < max(lrs) and lrs[-1] < max(lrs), (total, lrs)   # warms up, then falls


def test_precision_is_bf16_where_the_cpu_has_the_units_and_bf16_really_trains(small_npz, tmp_path, monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for has_units in (False, True):
        monkeypatch.setattr(train_module, "cpu_has_bf16", lambda has_units=has_units: has_units)
        assert use_bf16(cpu) is has_units and use_bf16(gpu) is True
        assert use_bf16(cpu, "fp32") is False and use_bf16(gpu, "fp32") is False and use_bf16(cpu, "bf16") is True
    with pytest.raises(ModelError, match="unknown precision 'fp16'"):
        TrainConfig(model="cnn2", precision="fp16").resolved()
    data = load_digits(str(small_npz))
    weights = {}
    for precision in ("fp32", "bf16"):
        result = train(TrainConfig(model="cnn2", epochs=1, seed=7, threads=1, precision=precision),
                       tmp_path / precision, data=data, progress=False)
        assert np.isfinite(result.history[0]["loss"])
        weights[precision] = read_checkpoint(tmp_path / precision / "last.pt")["model_state"]["0.weight"]
        assert weights[precision].dtype == torch.float32    # autocast: the weights themselves stay fp32
    assert not torch.equal(weights["fp32"], weights["bf16"])   # the same seed, so only precision differs


def test_mixup_side_swaps_and_sam_replay_by_seed_and_change_the_training(small_npz, tmp_path):
    data = load_digits(str(small_npz))

    def weights(name, **levers):
        cfg = TrainConfig(model="cnn1", recipe="strong", epochs=1, batch_size=64, seed=5, **levers)
        train(cfg, tmp_path / name, data=data, progress=False)
        return read_checkpoint(tmp_path / name / "last.pt")["model_state"]

    a, b = weights("a", mixup=0.2, swap_sides=0.5), weights("b", mixup=0.2, swap_sides=0.5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["mixup"] == 0.2
    for other in (weights("mixup", mixup=0.2), weights("swap", swap_sides=0.5)):   # each lever on its own
        assert any(not torch.equal(a[k], other[k]) for k in a)
    with pytest.raises(ModelError, match="one at a time"):
        TrainConfig(model="cnn1", mixup=0.2, cutmix=1.0).resolved()
    cut = weights("cutmix", cutmix=1.0, swap_sides=0.5)             # CutMix in the loop: replayable, not mixup
    assert all(torch.equal(cut[k], v) for k, v in weights("cutmix2", cutmix=1.0, swap_sides=0.5).items())
    assert any(not torch.equal(a[k], cut[k]) for k in a)
    sam = weights("sam", mixup=0.2, swap_sides=0.5, sam=0.05)    # SAM in the loop: replayable, and it changes the steps
    assert all(torch.equal(sam[k], v) for k, v in weights("sam2", mixup=0.2, swap_sides=0.5, sam=0.05).items())
    assert any(not torch.equal(a[k], sam[k]) for k in a)


@pytest.mark.parametrize("levers", [{}, {"distill_online": True}], ids=["once", "online"])
def test_distillation_follows_the_teachers_not_the_labels(small_npz, tmp_path, levers):
    """With all its loss on the teacher, a student's training never reads the labels: digits
    relabelled (each label shifted by one) give the very same weights, another teacher gives other
    weights, and with half the loss on the labels the relabelling matters again. Whether the teacher
    read the plain digits once or reads each batch online."""
    raw = dict(np.load(small_npz))
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, **{**raw, "y": (raw["y"] + 1) % 10})
    for name, spec in (("teacher", small_npz), ("other", shifted)):
        train(TrainConfig(model="cnn1", data=str(spec), epochs=1, batch_size=32), tmp_path / name, progress=False)

    def student(name: str, spec, teacher: str, weight: float = 1.0) -> dict:
        train(TrainConfig(model="cnn1", data=str(spec), epochs=1, batch_size=32, teachers=[str(tmp_path / teacher)],
                          distill_weight=weight, **levers), tmp_path / name, progress=False)
        return read_checkpoint(tmp_path / name / "last.pt")["model_state"]

    same = student("true_labels", small_npz, "teacher")
    assert json.loads((tmp_path / "true_labels" / "config.json").read_text())["teachers"] == [str(tmp_path / "teacher")]
    assert all(torch.equal(same[k], v) for k, v in student("shifted_labels", shifted, "teacher").items())
    assert any(not torch.equal(same[k], v) for k, v in student("other_teacher", small_npz, "other").items())
    half = student("half_true", small_npz, "teacher", weight=0.5)
    assert any(not torch.equal(half[k], v) for k, v in student("half_shifted", shifted, "teacher", 0.5).items())


def test_init_starts_from_another_runs_weights(small_npz, tmp_path):
    data = load_digits(str(small_npz))
    train(TrainConfig(model="ann1", epochs=1), tmp_path / "first", data=data, progress=False)
    train(TrainConfig(model="ann1", epochs=1, lr=1e-12, init=str(tmp_path / "first")), tmp_path / "again",
          data=data, progress=False)
    before = read_checkpoint(tmp_path / "first" / "last.pt")["model_state"]
    after = read_checkpoint(tmp_path / "again" / "last.pt")["model_state"]
    for name, weights in before.items():
        torch.testing.assert_close(after[name], weights, atol=1e-6, rtol=0)
    with pytest.raises(ModelError, match="holds a ann1"):
        train(TrainConfig(model="ann2", epochs=1, init=str(tmp_path / "first")), tmp_path / "other",
              data=data, progress=False)


def test_all_data_trains_on_the_test_split_too_and_validation_stays_apart(small_npz):
    data = load_digits(str(small_npz))
    usual = split_for_training(data, TrainConfig(model="ann1").resolved())
    final = split_for_training(data, TrainConfig(model="ann1", all_data=True, val_fraction=0.05).resolved())
    assert not set(usual[0].sources) & set(data.test.sources)
    train_set, val_set = final
    assert len(train_set) + len(val_set) == len(data.train) + len(data.test)
    assert set(data.test.sources) - set(val_set.sources) <= set(train_set.sources)
    assert not set(train_set.sources) & set(val_set.sources)
    assert 0.02 < len(val_set) / (len(train_set) + len(val_set)) < 0.1


def test_all_data_without_source_photos_trains_on_the_whole_test_split(crops):
    """A fraction cut of train + test would be the test split itself: validation comes from train."""
    train_part = DigitSet(crops["X"][:800], crops["y"][:800])
    test_part = DigitSet(crops["X"][800:1000], crops["y"][800:1000])
    train_set, val_set = split_for_training(DigitData("course.h5", train_part, test_part),
                                            TrainConfig(model="ann1", all_data=True).resolved())
    test_digits = {bytes(x) for x in test_part.images}
    assert sum(bytes(x) in test_digits for x in train_set.images) == 200
    assert not any(bytes(x) in test_digits for x in val_set.images)
    assert len(val_set) == 160 and len(train_set) == 640 + 200


def test_a_file_sorted_by_label_is_refused_rather_than_validated_on_two_digits(crops):
    order = np.argsort(crops["y"][:1000], kind="stable")
    images, labels = crops["X"][:1000][order], crops["y"][:1000][order]
    sorted_data = DigitData("sorted.npz", DigitSet(images, labels), DigitSet(images[:10], labels[:10]))
    with pytest.raises(DataFormatError, match=r"holds only digit\(s\) 7, 8, 9: the file looks sorted by label"):
        split_for_training(sorted_data, TrainConfig(model="ann1").resolved())
    shuffled = np.random.default_rng(0).permutation(1000)
    mixed = DigitData("mixed.npz", DigitSet(images[shuffled], labels[shuffled]), sorted_data.test)
    assert len(np.unique(split_for_training(mixed, TrainConfig(model="ann1").resolved())[1].labels)) == 10


def test_checkpoint_last_keeps_the_final_epoch_whatever_validation_says(small_npz, tmp_path):
    data = load_digits(str(small_npz))
    # a learning rate this small leaves validation accuracy the same each epoch: "best" keeps epoch 1
    for keep, epoch in [("best", 1), ("last", 3)]:
        train(TrainConfig(model="ann1", epochs=3, lr=1e-12, checkpoint=keep), tmp_path / keep, data=data,
              progress=False)
        state = read_checkpoint(tmp_path / keep / "best.pt")
        assert state["epoch"] == epoch and state["best_val_acc"] == state["history"][-1]["val_acc"]
    with pytest.raises(ModelError, match="checkpoint must be"):
        TrainConfig(model="ann1", checkpoint="middle").resolved()


KILL_DURING_SAVE = """
import sys, torch
from pathlib import Path
from housenum.checkpoint import save_checkpoint
Path(sys.argv[2]).touch()
save_checkpoint(Path(sys.argv[1]), {"model": "big", "blob": torch.randn(60_000_000)})
"""


def test_kill_during_save_leaves_old_checkpoint_intact(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": "old", "epoch": 1})
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_SAVE, str(path), str(started)])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".last.pt.*.tmp")):
        time.sleep(0.005)
    assert list(tmp_path.glob(".last.pt.*.tmp")), "the save never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = read_checkpoint(path)
    assert (state["model"], state["epoch"]) == ("old", 1)


def _signal_after_the_first_epoch(small_npz, run, signum) -> tuple[int, str]:
    """Train a long ann1 run, send `signum` once its first checkpoint exists; its exit status and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "housenum.cli", "train", "--model", "ann1", "--data", str(small_npz),
         "--epochs", "500", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "last.pt").exists():
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_ctrl_c_keeps_a_usable_checkpoint(small_npz, tmp_path):
    run = tmp_path / "run"
    code, err = _signal_after_the_first_epoch(small_npz, run, signal.SIGINT)
    assert code == 130
    assert "Traceback" not in err and "--resume" in err
    assert load_model(run).name == "ann1"
    assert read_checkpoint(run / "last.pt")["epoch"] >= 1
    # A new run stopped before its first epoch must not offer the old run's last.pt as its own
    proc = subprocess.Popen(
        [sys.executable, "-m", "housenum.cli", "train", "--model", "cnn1", "--data", "synthetic:20000",
         "--epochs", "1", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert "replacing the run in" in proc.stderr.readline()   # then 20,000 digits take seconds to draw
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted before the first epoch finished" in err and "--resume" not in err, err


def test_sigterm_ends_training_as_ctrl_c_does(small_npz, tmp_path):
    run = tmp_path / "run"
    code, err = _signal_after_the_first_epoch(small_npz, run, signal.SIGTERM)   # `kill`, `timeout`, a scheduler
    assert code == 130 and "Traceback" not in err and "--resume" in err, err
    assert read_checkpoint(run / "last.pt")["epoch"] >= 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_run_whose_loss_becomes_nan_is_refused_and_saves_nothing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ModelError, match=r"training diverged in epoch 1: the loss became nan .*"
                                         r"nothing of this run was saved\. Try a lower --lr"):
        train(TrainConfig(model="ann1", data="synthetic:200", epochs=2, lr=1e308, device="cpu"), run, progress=False)
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()

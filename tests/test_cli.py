"""The housenum command as a user runs it: JSON that pipes, reports on disk, and one-line errors."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from housenum.checkpoint import load_model
from housenum.read import DEFAULT_READER
from tests.conftest import SHARED_SVHN
from tests.test_formats import write_course_h5, write_official_mat


def housenum(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "housenum.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def compared(tmp_path_factory, small_npz):
    out = tmp_path_factory.mktemp("compare")
    proc = housenum("compare", "--models", "ann1,cnn1", "--data", small_npz, "--epochs", "1", "--out", out,
                    "--json")
    return out, json.loads(proc.stdout)


def test_compare_writes_leaderboard_and_report(compared):
    out, summary = compared
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["model"] for r in rows] == [r["model"] for r in summary["leaderboard"]]
    assert {r["model"] for r in rows} == {"ann1", "cnn1"}
    assert list(rows[0]) == ["model", "params", "epochs", "train_seconds", "wall_seconds", "val_acc", "test_acc",
                             "macro_f1", "inference_ms_per_image"]
    assert all(0 <= float(r["train_seconds"]) <= float(r["wall_seconds"]) > 0 for r in rows)
    assert float(rows[0]["val_acc"]) >= float(rows[1]["val_acc"])
    assert summary["selected"] == rows[0]["model"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6 and "selected" in page
    assert (out / "cnn1" / "eval" / "confusion.png").exists()


def test_the_report_flags_models_near_chance():
    from housenum.compare import near_chance_note

    note = near_chance_note([{"model": "resnet", "val_acc": 0.95}, {"model": "cnn2", "val_acc": 0.14}])
    assert "cnn2" in note and "resnet" not in note
    assert near_chance_note([{"model": "resnet", "val_acc": 0.95}]) == ""


def test_evaluate_json_prints_only_json(compared, small_npz):
    out, _ = compared
    proc = housenum("evaluate", out / "cnn1", "--data", small_npz, "--json")
    result = json.loads(proc.stdout)
    assert set(result) >= {"accuracy", "macro_f1", "n", "per_class"}
    assert set(result["per_class"]) == {str(d) for d in range(10)}
    assert 0 <= result["accuracy"] <= 1 and result["n"] > 100


def test_evaluate_tta_averages_shifted_copies(compared, small_npz, tmp_path):
    from housenum.evaluate import evaluate_run

    out, _ = compared
    proc = housenum("evaluate", out / "cnn1", "--data", small_npz, "--tta", "--json", "--out", tmp_path)
    assert json.loads(proc.stdout)["tta"] is True
    assert "with TTA" in (tmp_path / "report.txt").read_text()
    assert json.loads(housenum("evaluate", out / "cnn1", "--data", small_npz, "--json").stdout)["tta"] is False
    plain, shifted = (evaluate_run(out / "cnn1", small_npz, tmp_path / str(t), tta=t).probs for t in (False, True))
    assert plain.shape == shifted.shape and not np.allclose(plain, shifted)


def test_evaluate_the_shipped_model_from_any_folder(tmp_path):
    """The shipped model recorded its data relative to the project; `evaluate` finds it from elsewhere too."""
    proc = subprocess.run([sys.executable, "-m", "housenum.cli", "evaluate", "fast", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] > 0.9


def test_macro_f1_counts_only_the_digits_that_occur():
    from housenum.evaluate import score

    labels = np.array([3, 3, 5, 5])
    probs = np.eye(10)[[3, 3, 5, 3]]                     # one 5 read as 3
    result = score(probs, labels)
    assert result.accuracy == 0.75
    assert result.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)   # F1 of 3 and of 5, not of ten digits
    macro_row = next(line for line in result.report.splitlines() if "macro avg" in line)
    assert float(macro_row.split()[4]) == pytest.approx(result.macro_f1, abs=1e-4)   # the report agrees


def test_predict_json_one_line_per_image(compared, crops, tmp_path):
    out, _ = compared
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(crops["X"][i]).save(paths[-1])
    proc = housenum("predict", *paths, "--model", out / "cnn1", "--top-k", "2", "--json")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in paths]
    assert all(len(line["top_k"]) == 2 and 0 <= line["digit"] <= 9 for line in lines)


@pytest.mark.parametrize("damage, message", [
    (lambda s: {**s, "model_state": [1, 2]}, "weights do not fit model 'cnn1' ("),
    (lambda s: {**s, "model": "cnn2"}, "weights do not fit model 'cnn2' (Error(s) in loading state_dict"),
    (lambda s: {**s, "model_state": {k: v.float() * float("nan") for k, v in s["model_state"].items()}},
     "its weights hold nan or inf (0.weight and "),
])
def test_a_damaged_checkpoint_is_refused_in_one_short_line(compared, tmp_path, damage, message):
    import torch

    from housenum.errors import ModelError

    out, _ = compared
    state = torch.load(out / "cnn1" / "best.pt", weights_only=False)
    torch.save(damage(state), tmp_path / "damaged.pt")
    with pytest.raises(ModelError) as caught:
        load_model(tmp_path / "damaged.pt")
    text = str(caught.value)
    assert message in text and "\n" not in text and len(text.removeprefix(str(tmp_path))) < 300, text


def test_train_init_fine_tunes_a_run_of_the_same_model(compared, small_npz, tmp_path):
    out, _ = compared
    proc = housenum("train", "--model", "ann1", "--data", small_npz, "--epochs", "1", "--init", out / "ann1",
                    "--out", tmp_path / "tuned")
    assert "best val_acc" in proc.stdout
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["init"] == str(out / "ann1")
    proc = housenum("train", "--model", "cnn1", "--data", small_npz, "--init", out / "ann1", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "holds a ann1" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_says_when_a_model_trained_on_the_test_split(compared, small_npz, tmp_path):
    out, _ = compared
    assert json.loads(housenum("evaluate", out / "cnn1", "--data", small_npz, "--json").stdout)["held_out"]
    housenum("train", "--model", "ann1", "--data", small_npz, "--epochs", "1", "--all-data",
             "--val-fraction", "0.05", "--mixup", "0.2", "--out", tmp_path / "final")   # as the shipped model
    assert json.loads((tmp_path / "final" / "config.json").read_text())["mixup"] == 0.2
    proc = housenum("evaluate", tmp_path / "final", "--json")
    assert json.loads(proc.stdout)["held_out"] is False
    assert "not held-out" in proc.stderr
    assert "not held-out" in (tmp_path / "final" / "eval" / "report.txt").read_text()


def test_compare_on_the_greyscale_course_file_trains_rgb_models_on_grey(crops, tmp_path):
    course = tmp_path / "SVHN_single_grey1.h5"
    write_course_h5(course, crops)
    out = tmp_path / "compare"
    proc = housenum("compare", "--models", "ann1,resnet_tiny", "--data", course, "--epochs", "1", "--out", out)
    assert "note: resnet_tiny takes RGB digits and" in proc.stderr and "trains on grey" in proc.stderr
    assert json.loads((out / "resnet_tiny" / "config.json").read_text())["channels"] == 1
    assert (out / "leaderboard.csv").exists() and (out / "ann1" / "eval" / "report.txt").exists()
    proc = housenum("evaluate", "fast", "--data", course, check=False)   # a shipped RGB model cannot take grey
    assert proc.returncode == 2 and "takes RGB digits and this data is greyscale only" in proc.stderr
    assert "--channels 1" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # a new run in ann1's folder leaves none of the old run's evaluation behind, and says what it kept
    proc = housenum("train", "--model", "cnn1", "--data", course, "--epochs", "2", "--checkpoint", "last",
                    "--out", out / "ann1")
    assert not (out / "ann1" / "eval").exists()
    assert "cnn1: last val_acc" in proc.stdout and "(kept: --checkpoint last), best" in proc.stdout


def test_ctrl_c_during_compare_keeps_the_leaderboard_of_the_models_that_finished(tmp_path):
    import signal

    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "housenum.cli", "compare", "--models", "ann1,resnet", "--data",
                             "synthetic:3000", "--epochs", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    while "[2/2] resnet" not in seen:   # resnet's epoch of 2,400 digits takes seconds: interrupt it
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted; ann1 finished: their leaderboard and report are in" in err
    assert [row["model"] for row in csv.DictReader((out / "leaderboard.csv").open())] == ["ann1"]
    assert "Interrupted: resnet did not finish" in (out / "report.html").read_text()


def test_data_info_counts_and_grid(small_npz, tmp_path):
    proc = housenum("data", "info", small_npz, "--out", tmp_path / "grid.png", "--balance", tmp_path / "bal.png",
                    "--json")
    info = json.loads(proc.stdout)
    n = len(np.load(small_npz)["y"])
    assert info["splits"]["train"]["n"] + info["splits"]["test"]["n"] == n
    assert info["image_shape"] == [32, 32, 3] and info["sources_known"]
    assert Image.open(tmp_path / "grid.png").size[0] > 300
    assert info["balance_chart"] == str(tmp_path / "bal.png") and Image.open(tmp_path / "bal.png").size[0] > 300
    housenum("data", "info", "synthetic:20", "--out", tmp_path / "grid.jpg")
    assert Image.open(tmp_path / "grid.jpg").format == "JPEG"      # the format the name asks for
    bad = housenum("data", "info", "synthetic:20", "--out", tmp_path / "grid.xyz", check=False)
    assert bad.returncode == 2 and "cannot write a figure as '.xyz'" in bad.stderr


def test_data_info_on_whole_photos(svhn_dir, tmp_path):
    proc = housenum("data", "info", svhn_dir / "numbers", "--out", tmp_path / "photos.png", "--json")
    info = json.loads(proc.stdout)
    labels = json.loads((svhn_dir / "numbers" / "labels.json").read_text())
    assert info["photos"] == len(labels)
    assert info["by_length"]["2"] == sum(len(v["label"]) == 2 for v in labels.values())
    assert Image.open(tmp_path / "photos.png").size[0] > 600
    text = housenum("data", "info", svhn_dir / "numbers", "--balance", tmp_path / "lengths.png").stdout
    assert f"{len(labels)} photos" in text and "spans a median" in text
    assert f"balance chart: {tmp_path / 'lengths.png'}" in text and Image.open(tmp_path / "lengths.png").size[0] > 600


def bad_cases(tmp_path, crops, run):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image" * 20)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(crops["X"][0]).resize((300, 300)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    bad_mat = tmp_path / "bad_32x32.mat"
    write_official_mat(bad_mat, crops["X"][:10], crops["y"][:10])
    bad_mat.write_bytes(bad_mat.read_bytes()[:5000])
    wrong_keys = tmp_path / "wrong.npz"
    np.savez(wrong_keys, images=crops["X"][:10], labels=crops["y"][:10])
    bad_labels = tmp_path / "labels.npz"
    np.savez(bad_labels, X=crops["X"][:10], y=np.arange(10) + 5)
    not_ckpt = tmp_path / "model.pt"
    not_ckpt.write_bytes(b"junk")
    empty_npz = tmp_path / "empty.npz"
    np.savez(empty_npz, X=crops["X"][:0], y=crops["y"][:0])
    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, X=crops["X"][:20], y=crops["y"][:20])
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("in the way")
    a_file.with_suffix(".npz").write_text("in the way")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "labels.json").write_text("{}")
    digit = tmp_path / "digit.png"
    Image.fromarray(crops["X"][0]).save(digit)
    train = ["train", "--model", "ann1", "--data", tiny, "--out", tmp_path / "never"]
    reader_run, best_as_last = tmp_path / "reader_run", tmp_path / "best_as_last"
    for folder, checkpoint in ((reader_run, DEFAULT_READER), (best_as_last, run / "best.pt")):
        folder.mkdir()
        (folder / "last.pt").write_bytes(checkpoint.read_bytes())
    return [
        (["predict", digit, "--model", DEFAULT_READER], "a whole-number reader, not a digit model"),
        ([*train, "--epochs", "0"], "epochs must be 1 or more"),
        ([*train, "--batch-size", "-5"], "batch-size must be 1 or more"),
        ([*train, "--batch-size", "1"], "batch-size must be 2 or more"),
        ([*train, "--lr", "-1"], "lr must be a number above 0"),
        ([*train, "--mixup", "nan"], "mixup must be a finite number, got nan"),
        ([*train, "--cutmix", "inf"], "cutmix must be a finite number, got inf"),
        ([*train, "--sam", "nan"], "sam must be a finite number, got nan"),
        ([*train, "--val-fraction", "0"], "val-fraction must be between 0 and 1"),
        ([*train, "--val-fraction", "0.001"], "--val-fraction 0.001 leaves no validation digits of its 16"),
        (["compare", "--models", "ann1", "--data", tiny, "--epochs", "0", "--out", tmp_path / "c"],
         "epochs must be 1 or more"),
        (["compare", "--models", "ann1,ann1", "--data", tiny, "--out", tmp_path / "c"], "a model named twice"),
        (["data", "info", a_file.with_suffix(".npz")], "not an .npz file"),
        (["evaluate", digit], "not a readable housenum checkpoint"),
        ([*train, "--fold", "7"], "fold must be 0..4"),
        ([*train, "--device", "bogus"], "unknown device 'bogus'"),
        (["train", "--resume", reader_run, "--epochs", "2"], "a whole-number reader run; continue it with"),
        (["train", "--resume", best_as_last, "--epochs", "2"], "holds a model but not the state to resume it"),
        (["train", "--resume", run, "--epochs", "9", "--lr", "0.1", "--model", "cnn2"],
         "--model, --lr would be ignored"),
        (["data", "info", empty_npz], "holds no images"),
        (["data", "info", tmp_path], "folder has neither labels.json nor digitStruct.mat"),   # as photos
        (["train", "--data", tmp_path], "is a folder; give a .h5, .mat or .npz file of digit crops"),
        (["evaluate", run, "--data", tiny, "--out", a_file], "exists and is not a folder"),
        (["evaluate-numbers", ""], "no photos given"),
        (["evaluate", "--data", ""], "no data given"),   # not the model's own data, quietly
        (["evaluate-numbers", "synthetic:0"], "synthetic:N needs 1 <= N <= 50,000 photos, got 0"),
        (["data", "info", "synthetic:99999999999999999999"], "synthetic:N needs 10 <= N <= 1,000,000, got 99,999"),
        (["evaluate-numbers", tmp_path], "folder has neither labels.json nor digitStruct.mat"),   # and no note
        (["compare", "--models", ","], "names no model"),
        (["compare", "--models", "ann1", "--data", tiny, "--out", a_file],
         f"--out {a_file}: exists and is not a folder"),
        (["data", "info", tiny, "--balance", tmp_path], f"--balance {tmp_path}: is a folder; give a file name"),
        (["data", "info", tiny, "--out", tmp_path / "c.png", "--balance", tmp_path / "c.png"],
         "--out and --balance are both"),
        (["evaluate-numbers", SHARED_SVHN / "numbers", "--files", ""], "no photo name matches ''"),
        (["train", "--resume", a_file], "must be a folder (give another --resume)"),
        (["compare", "--models", "ann1", "--data", tmp_path / "missing.npz", "--out", tmp_path / "refused"],
         "no such file"),
        ([*train[:-1], a_file], f"--out {a_file}: exists and is not a folder"),
        ([*train[:-1], a_file / "run"], f"--out {a_file / 'run'}: {a_file} is a file, not a folder"),
        (["train-reader", "--data", "synthetic:20", "--out", a_file / "r"], f"{a_file} is a file, not a folder"),
        (["evaluate-numbers", "synthetic:20", "--out", a_file / "g"], f"{a_file} is a file, not a folder"),
        ([*train[:-1], run, "--lr", "-1"], "lr must be a number above 0"),   # before "replacing the run in"
        ([*train[:-1], run, "--optimizer", "adamw"], "unknown optimizer 'adamw': use adam or sgd"),
        ([*train[:-1], run, "--device", "tpu"], "unknown device 'tpu'"),
        (["compare", "--models", "ann1", "--data", tiny, "--quick", "--epochs", "3", "--out", tmp_path / "c"],
         "--quick and --epochs"),
        (["export", run, "--out", run / "best.pt"], "would overwrite a checkpoint with the ONNX export"),
        (["export", run, "--out", tmp_path / "m.txt"], f"an ONNX export's name ends in .onnx, e.g. {tmp_path}/m.onnx"),
        (["read", digit, "--reader-only", "--digit-model", "fast"], "cannot be given together"),
        (["read", digit, "--min-confidence", "1.5"],               # a usage error too is one line, with a hint
         "Invalid value for '--min-confidence': must be from 0 to 1, got 1.5 (see '"),
        (["read", digit, "--min-confidence", "nan"], "'--min-confidence': must be a finite number, got nan"),
        (["train", "--bogus"], "No such option: --bogus"),
        (["read", digit, "--out", a_file], "exists and is not a folder"),
        (["train-reader", "--data", "synthetic:20", "--epochs", "0", "--out", tmp_path / "r"], "epochs must be 1"),
        (["train-reader", "--data", "synthetic:20", "--synthetic", "-3", "--out", tmp_path / "r"],
         "synthetic must be 0 or more"),
        (["train-reader", "--data", "synthetic:20", "--fold", "9", "--out", tmp_path / "r"], "fold must be 0..4"),
        ([*train[:-1], run, "--init", tmp_path / "gone"],   # before "replacing the run in", so one line
         f"--init {tmp_path / 'gone'}: no such run folder or checkpoint"),
        (["train-reader", "--data", "synthetic:20", "--init", tmp_path, "--out", tmp_path / "r"],
         f"--init {tmp_path}: run folder has no best.pt or last.pt"),
        ([*train, "--fold", "1", "--val-fraction", "0.3"], "--fold and --val-fraction cannot be given together"),
        (["train-reader", "--data", "synthetic:20", "--val-fraction", "0.2", "--fold", "1", "--out", tmp_path / "r"],
         "--fold and --val-fraction cannot be given together: --fold K holds out photo fold K of 5, not a share"),
        (["train-reader", "--data", "synthetic:20", "--minutes", "inf", "--out", tmp_path / "r"],
         "minutes must be a finite number, got inf"),   # the schedule follows the clock: it would never move
        (["train-reader", "--data", "synthetic:20", "--loc-zoom", "1", "nan", "--out", tmp_path / "r"],
         "loc-zoom must be a finite number, got nan"),
        (["serve", "--max-mb", "inf"], "Invalid value for '--max-mb'"),
        (["train-reader", "--data", "synthetic:20", "--localizer-only", "--out", tmp_path / "r"],
         "--localizer-only works on the networks of --init: give --init RUN"),
        (["train-reader", "--data", "synthetic:20", "--init", not_ckpt, "--out", tmp_path / "r"],
         "not a readable housenum checkpoint"),
        (["train-reader", "--data", "synthetic:20", "--init", run, "--out", tmp_path / "r"],
         "not a whole-number reader checkpoint (it holds a digit model"),
        (["data", "info", tmp_path / "missing.npz"], "no such file"),
        (["data", "info", photos, "--channels", "7"], "--channels applies to digit crops"),
        (["data", "info", wrong_keys], "missing array(s) X, y"),
        (["data", "info", bad_labels], "labels must be whole numbers 0..9"),
        (["data", "info", bad_mat], "not a readable MATLAB"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["predict", garbage, "--model", run], "not an image"),
        (["predict", empty, "--model", run], "empty"),
        (["predict", truncated, "--model", run], "truncated"),
        (["predict", tmp_path / "none.png", "--model", run], "no such file"),
        (["evaluate", not_ckpt], "not a readable housenum checkpoint"),
        (["evaluate", tmp_path], "no best.pt or last.pt"),
    ]


def test_bad_input_is_one_clear_line(compared, crops, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    out, _ = compared
    cases = bad_cases(tmp_path, crops, out / "cnn1")
    # each case is a process that spends most of its second or two importing torch: a few side by side
    # (all are refused before they write anything, so they cannot get in each other's way)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        procs = list(pool.map(lambda case: housenum(*case[0], check=False), cases))
    for (args, message), proc in zip(cases, procs):
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert not (tmp_path / "refused").exists()   # compare refused before training leaves no empty folder
    assert load_model(out / "cnn1").name == "cnn1"   # the export refused left the checkpoint as it was


def test_an_unreadable_image_is_one_line_and_the_others_are_read(compared, crops, tmp_path):
    out, _ = compared
    digit = tmp_path / "digit.png"
    Image.fromarray(crops["X"][0]).save(digit)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = housenum("predict", digit, "/proc/self/mem", empty, digit, "--model", out / "cnn1", check=False)
    assert proc.returncode == 1 and len(proc.stdout.splitlines()) == 2
    assert proc.stderr.strip().splitlines() == ["error: /proc/self/mem: cannot be read (Input/output error)",
                                                f"error: {empty}: a folder with no images in it (.png, .jpg, ...)"]


def test_an_out_folder_that_cannot_take_files_is_refused_before_the_work(crops, tmp_path):
    import shutil

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    digit = tmp_path / "digit.png"
    Image.fromarray(crops["X"][0]).save(digit)
    command = [sys.executable, "-m", "housenum.cli", "read", str(digit), "--out", str(locked / "drawn")]
    if os.geteuid() == 0:   # root writes anywhere unless it gives up that power
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv, which can drop root's override")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: --out {locked / 'drawn'}: {locked} is not writable"


def test_help_shows_no_value_beside_an_on_off_flag():
    """typer writes `<bool>` beside a flag unless told not to, as if `--json` took a value."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from housenum.cli import app

    def commands(group, path=()):
        for name, command in group.commands.items():
            yield from commands(command, (*path, name)) if hasattr(command, "commands") else [(*path, name)]

    names = [(), ("data",), *commands(get_command(app))]
    assert ("data", "info") in names and ("read",) in names
    for name in names:
        lines = CliRunner().invoke(app, [*name, "--help"], env={"COLUMNS": "200"}).stdout.splitlines()
        flagged = [line for line in lines if "<bool>" in line]
        assert lines and not flagged, f"housenum {' '.join(name)} --help: {flagged}"


def test_train_help_names_every_registered_model():
    """The CLI keeps torch out of `--help`, so its model list is written out: it must not drift from the registry."""
    from housenum.models import list_models

    text = " ".join(housenum("train", "--help").stdout.split())
    missing = [name for name in list_models() if name not in text]
    assert not missing, f"`housenum train --help` does not name {missing}"


def test_resume_takes_more_epochs_and_a_device(small_npz, tmp_path):
    run = tmp_path / "run"
    housenum("train", "--model", "ann1", "--data", small_npz, "--epochs", "1", "--out", run)
    housenum("train", "--resume", run, "--epochs", "2", "--device", "cpu")
    with open(run / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]


def test_predict_reads_a_digit_piped_in(crops, tmp_path):
    import io

    buffer = io.BytesIO()
    Image.fromarray(crops["X"][0]).save(buffer, format="PNG")
    proc = subprocess.run([sys.executable, "-m", "housenum.cli", "predict", "-", "--json"], input=buffer.getvalue(),
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["file"] == "-" and answer["digit"] == crops["y"][0]


def test_a_file_that_cannot_be_written_is_named_as_asked_not_by_its_temporary_name(tmp_path):
    from housenum.io import write_text

    with pytest.raises(OSError) as caught:
        write_text("/proc/housenum-test.txt", "x")   # /proc takes no new files, even from root
    assert caught.value.filename == "/proc/housenum-test.txt" and ".tmp" not in str(caught.value)


def test_sigterm_stops_a_command_as_ctrl_c_does_and_leaves_no_half_written_file(tmp_path):
    import signal

    out = tmp_path / "result.json"
    writer = ("import sys, time\n"
              "from housenum.cli import _stop_on_sigterm\n"
              "from housenum.io import atomic_path\n"
              "_stop_on_sigterm()\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_text('half')\n"
              "    print(tmp, flush=True)\n"
              "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    assert os.path.exists(tmp)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err   # Python's default would have ended it without a word
    assert not os.path.exists(tmp) and not out.exists() and os.listdir(tmp_path) == []


def test_ctrl_c_in_a_command_without_its_own_handling_says_interrupted_once(monkeypatch, capsys):
    import housenum.data
    from housenum import cli

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(housenum.data, "load_digits", ctrl_c)       # as in the middle of a download
    monkeypatch.setattr(sys, "argv", ["housenum", "data", "info", "svhn"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


@pytest.mark.parametrize(("had_run", "saves", "resuming", "says"), [
    (False, False, False, "interrupted before the first checkpoint: nothing to resume"),
    (True, False, False, "interrupted before the first checkpoint; the earlier run in {run} is as it was"),
    (True, True, False, "interrupted; the last checkpoint is in {run}/last.pt "
                        "(continue with: housenum train-reader --resume {run})"),
    (True, False, True, "interrupted; the last checkpoint is in {run}/last.pt "
                        "(continue with: housenum train-reader --resume {run})"),
])
def test_ctrl_c_during_training_says_whose_last_checkpoint_the_folder_holds(tmp_path, capsys, had_run, saves,
                                                                              resuming, says):
    from housenum.cli import _ctrl_c_says_what_is_kept
    run = tmp_path / "run"
    run.mkdir()
    if had_run:
        (run / "last.pt").write_bytes(b"the old run")
    with pytest.raises(SystemExit) as stop, _ctrl_c_says_what_is_kept(
            run, "train-reader", resuming, first="the first checkpoint", last="the last checkpoint"):
        if saves:   # a new file in its place, as save_checkpoint's atomic rename leaves
            (run / "new.pt").write_bytes(b"this run")
            os.replace(run / "new.pt", run / "last.pt")
        raise KeyboardInterrupt
    assert stop.value.code == 130
    assert capsys.readouterr().err == f"error: {says.format(run=run)}\n"


def test_a_file_name_that_is_not_utf8_prints_as_its_bytes_under_a_strict_utf8_locale(crops, digit_checkpoint,
                                                                                     tmp_path):
    """Python's stdout refuses such a name (kept as surrogates) under en_US.UTF-8: it was a traceback."""
    name = os.fsdecode(b"\xff\xfe.png")
    Image.fromarray(crops["X"][0]).save(tmp_path / name)
    proc = subprocess.run([sys.executable, "-m", "housenum.cli", "predict", name, "--model", digit_checkpoint],
                          capture_output=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.startswith(b"\xff\xfe.png: "), proc.stdout


def test_every_example_in_help_parses_as_its_command():
    """The Examples of each command's --help: each `housenum ...` line names a command and options that
    exist, and takes the arguments it gives (parsed as the command line would be, without running it)."""
    import shlex

    import typer

    from housenum.cli import app

    group = typer.main.get_command(app)
    commands = {name: group.get_command(None, name) for name in group.list_commands(None)}
    commands |= {f"data {name}": sub for name, sub in commands.pop("data").commands.items()}
    seen = 0
    for name, command in commands.items():
        lines = (command.help or "").partition("Examples:")[2].splitlines()
        for line in lines:
            words = shlex.split(line.split("#")[0].split("|")[0])
            if "housenum.cli" in words:   # torchrun ... -m housenum.cli train ...
                words = ["housenum", *words[words.index("housenum.cli") + 1:]]
            if not words or words[0] != "housenum":
                continue
            assert " ".join(words[1:]).startswith(name), line
            command.make_context(name, words[1 + len(name.split()):])   # raises on an unknown option or value
            seen += 1
    assert seen >= 20, seen

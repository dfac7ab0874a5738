"""ONNX export: parity with PyTorch on real digits, dynamic batch, and the server's choice of runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from housenum.checkpoint import save_checkpoint
from housenum.cli import app
from housenum.errors import ModelError
from housenum.export import HASH_KEY, OnnxModel, export_onnx, load_digit_recognizer, onnx_path_for, runtime_of
from housenum.models import create_model, model_spec
from housenum.predict import DigitRecognizer
from housenum.preprocess import pixels_to_tensor


def make_checkpoint(path, name: str, seed: int = 0):
    """An untrained model of the family is enough to check that export preserves the arithmetic."""
    import torch

    torch.manual_seed(seed)
    channels = model_spec(name).channels
    save_checkpoint(path, {"model": name, "channels": channels, "config": {"model": name},
                           "model_state": create_model(name, channels).state_dict()})
    return path


@pytest.mark.parametrize("name", ["ann1", "cnn2", "resnet"])
def test_onnx_matches_pytorch_on_real_digits(tmp_path, svhn_dir, name):
    ckpt = make_checkpoint(tmp_path / "m.pt", name)
    report = export_onnx(ckpt, parity_data=str(svhn_dir / "crops.npz"), n_parity=256)
    assert report.path == tmp_path / "m.onnx" and report.n_parity == 256
    assert report.max_abs_diff < 1e-4
    assert report.argmax_agreement == 1.0


def test_export_cli_prints_parity_and_batch_is_dynamic(tmp_path, svhn_dir, crops):
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", "cnn1")
    out = tmp_path / "exported.onnx"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(out),
                                      "--data", str(svhn_dir / "crops.npz"), "--n", "128", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_abs_diff"] < 1e-4 and report["n_parity"] == 128

    onnx_model = OnnxModel(out)
    recognizer = DigitRecognizer(ckpt)
    digits = np.stack([recognizer.prepare(x) for x in crops["X"][:7]])
    for n in (1, 7):
        assert onnx_model.run(pixels_to_tensor(digits[:n]).numpy()).shape == (n, 10)

    text = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out), "--data", "synthetic:200", "--n", "16"])
    assert "max abs diff of logits" in text.stdout
    bad = CliRunner().invoke(app, ["export", str(ckpt), "--format", "tflite"])
    assert bad.exit_code == 2


def test_exporting_a_shipped_model_by_name_writes_here_not_into_the_package(tmp_path, svhn_dir, monkeypatch):
    from housenum.checkpoint import SHIPPED_DIGIT_MODELS

    shipped = onnx_path_for(SHIPPED_DIGIT_MODELS["fast"])
    before = shipped.read_bytes()
    monkeypatch.chdir(tmp_path)
    report = export_onnx("fast", parity_data=str(svhn_dir / "crops.npz"), n_parity=16)
    assert report.path == shipped.relative_to(shipped.parent) and (tmp_path / shipped.name).is_file()
    assert shipped.read_bytes() == before


def test_server_runtime_follows_the_export(tmp_path, crops):
    ckpt = make_checkpoint(tmp_path / "digits.pt", "cnn1")
    assert runtime_of(load_digit_recognizer(ckpt)) == "pytorch"
    export_onnx(ckpt, parity_data="synthetic:200", n_parity=8)
    onnx_rec = load_digit_recognizer(ckpt)
    assert runtime_of(onnx_rec) == "onnxruntime"
    assert onnx_rec.loaded.model.metadata[HASH_KEY]
    images = list(crops["X"][:32])
    torch_preds = DigitRecognizer(ckpt).predict(images)
    onnx_preds = onnx_rec.predict(images)
    assert [p.digit for p in onnx_preds] == [p.digit for p in torch_preds]
    assert np.allclose([p.confidence for p in onnx_preds], [p.confidence for p in torch_preds], atol=1e-5)

    make_checkpoint(ckpt, "cnn1", seed=1)  # retrained: the export beside it is now stale
    assert runtime_of(load_digit_recognizer(ckpt)) == "pytorch"


def test_int8_export_of_the_shipped_model_reads_as_the_float_one(tmp_path, svhn_dir, crops):
    """The 8-bit export must keep the trained model's answers, not merely run."""
    out = tmp_path / "digits.int8.onnx"
    report = export_onnx(None, out=out, parity_data=str(svhn_dir / "crops.npz"), n_parity=256, int8=True)
    assert report.precision == "int8" and report.as_json()["precision"] == "int8"
    assert report.argmax_agreement >= 0.99
    assert out.stat().st_size < 0.4 * onnx_path_for(report.checkpoint).stat().st_size
    quantized = OnnxModel(out)
    assert quantized.metadata["housenum_precision"] == "int8"
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)

    shipped_int8 = load_digit_recognizer(None, int8=True)  # the export that ships beside digits.pt
    assert runtime_of(shipped_int8) == "onnxruntime-int8"
    images = list(crops["X"][-200:])
    float_digits = [p.digit for p in load_digit_recognizer(None).predict(images)]
    int8_digits = [p.digit for p in shipped_int8.predict(images)]
    assert np.mean(np.equal(float_digits, int8_digits)) >= 0.99


def test_int8_needs_a_matching_export(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", "cnn1")
    with pytest.raises(ModelError, match="no int8 export .*`housenum export .* --int8`"):
        load_digit_recognizer(ckpt, int8=True)
    result = CliRunner().invoke(app, ["export", str(ckpt), "--int8", "--data", "synthetic:300", "--n", "16",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(tmp_path / "run" / "best.int8.onnx")
    assert runtime_of(load_digit_recognizer(ckpt, int8=True)) == "onnxruntime-int8"
    assert runtime_of(load_digit_recognizer(ckpt)) == "pytorch"  # the float export is still its own choice

    make_checkpoint(ckpt, "cnn1", seed=1)  # retrained: a stale int8 export is refused, not used
    with pytest.raises(ModelError, match="another checkpoint"):
        load_digit_recognizer(ckpt, int8=True)


def test_serve_int8_setting_travels_to_the_workers(monkeypatch):
    from housenum.serve.app import Settings

    for value, expected in ((True, True), (False, False)):
        for key, raw in Settings(int8=value, threads=2).to_env().items():
            monkeypatch.setenv(key, raw)
        assert Settings.from_env().int8 is expected


@pytest.mark.parametrize("export", ["digits.onnx", "reader.read.onnx"])
def test_an_onnx_file_given_as_the_model_is_refused_with_what_to_give(export):
    from housenum.checkpoint import WEIGHTS_DIR, load_model
    from housenum.read import NumberReader

    load = load_model if export.startswith("digits") else NumberReader
    with pytest.raises(ModelError, match=rf"{export}: an ONNX export, not a checkpoint; give the run folder or \.pt"):
        load(WEIGHTS_DIR / export)

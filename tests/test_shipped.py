"""The shipped digit models: the default one and `fast` by name, with the exports that ship beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from housenum.checkpoint import DEFAULT_DIGIT_MODEL, SHIPPED_DIGIT_MODELS, checkpoint_path, load_model
from housenum.cli import app
from housenum.errors import ModelError
from housenum.export import HASH_KEY, OnnxModel, file_sha256, load_digit_recognizer, onnx_path_for, runtime_of


@pytest.mark.parametrize("checkpoint", [DEFAULT_DIGIT_MODEL, *SHIPPED_DIGIT_MODELS.values()])
def test_shipped_exports_come_from_the_shipped_weights(checkpoint):
    """A retrained checkpoint shipped with a stale export would silently serve the old model."""
    for int8 in (False, True):
        export = OnnxModel(onnx_path_for(checkpoint, int8))
        assert export.metadata[HASH_KEY] == file_sha256(checkpoint)
        assert export.metadata.get("housenum_precision", "float32") == ("int8" if int8 else "float32")


def test_fast_is_a_name_unless_a_file_has_it(tmp_path, monkeypatch):
    assert checkpoint_path("fast") == SHIPPED_DIGIT_MODELS["fast"]
    assert load_model("fast").name == "resnet_tiny"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()
    with pytest.raises(ModelError, match="fast: run folder has no best.pt"):
        checkpoint_path("fast")  # a run folder called fast is the user's, not ours

    from housenum.read import reader_checkpoint_path

    monkeypatch.chdir(tmp_path / "fast")
    with pytest.raises(ModelError, match="no such run folder"):
        reader_checkpoint_path("fast")  # the name is a digit model's, not a reader's


def test_predict_with_the_fast_model_reads_real_digits(crops, tmp_path):
    from PIL import Image

    paths = []
    for i in range(0, len(crops["X"]), len(crops["X"]) // 40):
        paths.append(tmp_path / f"{i}_{crops['y'][i]}.png")
        Image.fromarray(crops["X"][i]).save(paths[-1])
    result = CliRunner().invoke(app, ["predict", "--model", "fast", "--json", *map(str, paths)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    right = [line["digit"] == int(line["file"].rsplit("_", 1)[1][0]) for line in lines]
    assert len(lines) == len(paths) and np.mean(right) >= 0.9


def test_fast_int8_reads_as_its_float_export(crops):
    images = list(crops["X"][-300:])
    int8 = load_digit_recognizer("fast", int8=True)
    assert runtime_of(int8) == "onnxruntime-int8"
    float_digits = [p.digit for p in load_digit_recognizer("fast").predict(images)]
    assert np.mean(np.equal(float_digits, [p.digit for p in int8.predict(images)])) >= 0.98

"""ONNX export of digit models, with a parity check on real digits, and ONNX Runtime inference.

An export is written beside its checkpoint by default (`best.onnx` beside `best.pt`, `digits.onnx`
beside `digits.pt`); it records the checkpoint's SHA-256, so a retrained checkpoint never runs with a
stale export: `load_digit_recognizer` uses the ONNX file only when the hashes match.

`int8=True` also quantizes the export (`best.int8.onnx`): weights and activations in 8 bits, scaled on
real training digits. Measured on this 2-core CPU it serves the shipped model 1.5-1.8x faster with the same
accuracy (benchmarks/infer_speed.py, docs/serving.md); the float export stays the default.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from housenum.checkpoint import checkpoint_path, load_model, recorded_data
from housenum.errors import ModelError, check_whole
from housenum.io import atomic_path
from housenum.predict import DigitRecognizer
from housenum.preprocess import pixels_to_tensor

OPSET = 17
INPUT_NAME = "pixels"  # float (N, C, 32, 32) in 0..1, as `pixels_to_tensor` makes
OUTPUT_NAME = "logits"  # float (N, 10)
HASH_KEY = "housenum_checkpoint_sha256"
log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    path: Path
    checkpoint: Path
    model: str
    parity_data: str
    n_parity: int
    max_abs_diff: float
    argmax_agreement: float
    seconds: float
    precision: str = "float32"

    def as_json(self) -> dict:
        return {"path": str(self.path), "checkpoint": str(self.checkpoint), "model": self.model,
                "precision": self.precision, "parity_data": self.parity_data, "n_parity": self.n_parity,
                "max_abs_diff": self.max_abs_diff, "argmax_agreement": self.argmax_agreement,
                "seconds": round(self.seconds, 3)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_path_for(checkpoint: Path, int8: bool = False) -> Path:
    """Where the server looks for a checkpoint's export: the same name with .onnx (.int8.onnx)."""
    return checkpoint.with_suffix(".int8.onnx" if int8 else ".onnx")


def export_onnx(source: str | Path | None, out: str | Path | None = None, parity_data: str | None = None,
                n_parity: int = 512, int8: bool = False, n_calibration: int = 512) -> ExportReport:
    """Export a run folder or checkpoint (None: the shipped model) to ONNX with a dynamic batch axis,
    to `out` (default: beside the checkpoint; for a shipped model given by name or None, the
    current folder, so the package's own exports are never overwritten).

    The first `n_parity` test digits of `parity_data` (a dataset spec; default: the one the model was
    trained on) run through both PyTorch and ONNX Runtime; the report carries the largest absolute
    difference of the logits and how often the top digit agrees. With `int8`, the export is quantized
    with scales measured on `n_calibration` training digits of the same data (never the parity digits).
    """
    from housenum.data import load_digits

    t0 = time.perf_counter()
    ckpt = checkpoint_path(source)
    by_name = source is None or not Path(source).exists()   # a shipped model: never write into the package
    path = Path(out) if out is not None else onnx_path_for(ckpt, int8)
    if out is None and by_name:
        path = Path(path.name)
    if path.resolve() == ckpt.resolve() or path.suffix.lower() == ".pt":
        raise ModelError(f"--out {path}: would overwrite a checkpoint with the ONNX export; give a .onnx name")
    if path.suffix.lower() != ".onnx":   # serve, the reader and ONNX tools find exports by this suffix
        raise ModelError(f"--out {path}: an ONNX export's name ends in .onnx, e.g. {path.with_suffix('.onnx')}")
    loaded = load_model(ckpt)
    spec = parity_data if parity_data is not None else recorded_data(loaded, "synthetic")
    data = load_digits(spec, loaded.channels)
    parity_images = (data.test if len(data.test) else data.train).images[:n_parity]
    metadata = {HASH_KEY: file_sha256(ckpt), "housenum_model": loaded.name,
                "housenum_channels": str(loaded.channels), "housenum_precision": "int8" if int8 else "float32"}
    with atomic_path(path) as tmp:
        if int8:
            calibration = pixels_to_tensor(_spread(data.train.images, n_calibration)).numpy()
            with tempfile.TemporaryDirectory() as work:
                float_file = Path(work) / "float.onnx"
                _export_float(loaded, float_file)
                _quantize(float_file, tmp, calibration)
        else:
            _export_float(loaded, tmp)
        _add_metadata(tmp, metadata)
        x = pixels_to_tensor(parity_images)      # checked before the export takes its name
        with torch.no_grad():
            expected = loaded.model(x).numpy()
        got = OnnxModel(tmp).run(x.numpy())
    diff = float(np.abs(expected - got).max())
    agree = float((expected.argmax(1) == got.argmax(1)).mean())
    return ExportReport(path, ckpt, loaded.name, spec, len(x), diff, agree, time.perf_counter() - t0,
                        metadata["housenum_precision"])


def _export_float(loaded, path: Path) -> None:
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated but exact and dependency-free for these small models
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(loaded.model, torch.zeros(2, loaded.channels, 32, 32), str(path), dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def _quantize(float_file: Path, out: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization by ONNX Runtime's own tool: per-channel signed weights, unsigned
    activations, and 7-bit weights (`reduce_range`): without it this CPU's 8-bit multiply-add
    saturates and 1.3% of top digits change (measured); with it 0.1-0.7%, accuracy unchanged."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i:i + 64] for i in range(0, len(calibration), 64))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = float_file.with_name("prepared.onnx")
    quant_pre_process(str(float_file), str(prepared))
    quantize_static(str(prepared), str(out), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _spread(images: np.ndarray, n: int) -> np.ndarray:
    """`n` images spread evenly over the set (a fixed choice: the same export every time)."""
    if len(images) == 0:
        raise ModelError("no training digits to calibrate the int8 export on; give --data")
    return images[np.linspace(0, len(images) - 1, min(n, len(images))).astype(int)]


class OnnxModel(nn.Module):
    """An exported digit model run by ONNX Runtime, callable like the PyTorch module it replaces."""

    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True) -> None:
        """`spin=False` when other sessions take turns on the same cores (the whole-number reader):
        threads left spinning after a run starve theirs. Alone, spinning is faster (batch 1: 0.73
        ms per digit against 0.85-0.99 without; benchmarks/infer_speed.py)."""
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable or foreign files
            raise ModelError(f"{self.path}: not a readable ONNX model ({e})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (N, C, 32, 32) in 0..1 -> logits (N, 10)."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels, np.float32)})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().cpu().numpy()))


def load_digit_recognizer(source: str | Path | None = None, threads: int | None = None,
                          spin: bool = True, int8: bool = False) -> DigitRecognizer:
    """A DigitRecognizer that runs on ONNX Runtime when a matching export sits beside the checkpoint,
    on PyTorch otherwise; preprocessing and outputs are the same either way. `spin`: see OnnxModel.
    `int8`: the quantized export (`housenum export --int8`), which must exist and match."""
    if threads is not None:
        check_whole("threads", threads)
    recognizer = DigitRecognizer(source)
    checkpoint = recognizer.loaded.path
    onnx_file = onnx_path_for(checkpoint, int8)
    remake = f"make it with `housenum export {checkpoint} --int8`"
    if int8 and not onnx_file.exists():
        raise ModelError(f"no int8 export beside {checkpoint}: {remake}")
    if onnx_file.exists():
        onnx_model = OnnxModel(onnx_file, threads, spin)
        if onnx_model.metadata.get(HASH_KEY) == file_sha256(checkpoint):
            recognizer.loaded = replace(recognizer.loaded, model=onnx_model)
        elif int8:  # asked for by name: refuse rather than quietly serve another runtime
            raise ModelError(f"{onnx_file} was exported from another checkpoint than {checkpoint}: {remake}")
        else:
            log.warning("%s was exported from another checkpoint than %s; using PyTorch", onnx_file, checkpoint)
    return recognizer


def runtime_of(recognizer: DigitRecognizer) -> str:
    """`pytorch`, `onnxruntime` or `onnxruntime-int8`."""
    model = recognizer.loaded.model
    if not isinstance(model, OnnxModel):
        return "pytorch"
    return "onnxruntime-int8" if model.metadata.get("housenum_precision") == "int8" else "onnxruntime"

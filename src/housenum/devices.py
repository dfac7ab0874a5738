"""The torch device a run or a reader uses, from the names a user may give."""

from __future__ import annotations

import os

import torch

from housenum.errors import ModelError

DEVICE_NAMES = "auto, cpu or cuda (or cuda:N)"


def pick_device(name: str) -> torch.device:
    """"auto": this rank's GPU where there is one (LOCAL_RANK under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {name!r}: use {DEVICE_NAMES}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device '{name}' asked for, but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise ModelError(f"unsupported device '{name}': use {DEVICE_NAMES}")
    return device

"""Training: an explicit loop over in-memory uint8 tensors, one epoch at a time.

Runs on the CPU, a CUDA GPU (AMP, pinned memory) or several through `torchrun` (DDP), with the
same call. Each epoch writes `last.pt` (and `best.pt` when validation improves) atomically, so
Ctrl-C or a crash leaves a usable checkpoint and `resume=True` continues from it.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from housenum import plots
from housenum.checkpoint import (checkpoint_path, clear_old_run, fit_weights, load_model, read_checkpoint,
                                 read_digit_checkpoint, save_checkpoint)
from housenum.data import DEFAULT_SPEC, DigitData, DigitSet, load_digits
from housenum.data.augment import Augment, augment_batch, cutmix, mixup
from housenum.data.splits import validation_split
from housenum.devices import pick_device
from housenum.errors import DataFormatError, ModelError, is_whole
from housenum.io import atomic_open, write_text
from housenum.models import create_model, model_spec
from housenum.models.layers import fit_temperature
from housenum.models.summary import model_summary
from housenum.preprocess import pixels_to_tensor

SCHEDULES = ("constant", "onecycle", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
COSINE_WARMUP = 0.03   # share of the steps the cosine schedule spends warming up (OneCycle: 0.25)

# Named recipes: every knob a recipe sets; a TrainConfig field left at None takes the recipe's value.
RECIPES: dict[str, dict] = {
    "notebook": {  # the course notebook: plain Adam, cross-entropy, constant learning rate
        "augment": False, "label_smoothing": 0.0, "schedule": "constant", "weight_decay": 0.0, "ema": 0.0,
    },
    "strong": {
        "augment": True,          # batched affine warp + colour jitter
        "label_smoothing": 0.1,
        "schedule": "onecycle",   # warm up then anneal the learning rate
        "weight_decay": 5e-4,     # decoupled (AdamW)
        "ema": 0.999,             # evaluate and ship an exponential moving average of the weights
    },
}


OPTIMIZERS = ("adam", "sgd")

# A run folder's files, and those `housenum evaluate` writes in its eval/; a new run in an old
# run's folder removes them first


@dataclass
class TrainConfig:
    """Every setting of a run; `config.json` in the run folder is this, so a run can be repeated."""

    model: str
    data: str = DEFAULT_SPEC
    epochs: int | None = None        # None: the model's default (the notebook's for its four)
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 42
    channels: int | None = None      # 1 greyscale, 3 RGB; None: the model's default
    recipe: str | None = None        # None: the model's default recipe
    val_fraction: float = 0.2
    fold: int | None = None          # cross-validation fold (of n_folds) used as validation
    n_folds: int = 5
    all_data: bool = False           # train on the data's test split too: a final model, no held-out figures
    checkpoint: str = "best"         # best.pt holds: "best" validation epoch, or "last" (small validation: noise)
    augment: bool | None = None          # None: the recipe's value (see RECIPES)
    label_smoothing: float | None = None
    schedule: str | None = None          # constant | onecycle | cosine (a short warm-up, then cosine to 0)
    weight_decay: float | None = None
    optimizer: str = "adam"              # adam (AdamW with weight decay) | sgd (Nesterov momentum 0.9)
    sam: float = 0.0                     # sharpness-aware minimisation's radius rho (0: off; two passes a step)
    ema: float | None = None             # decay of the weight average; 0 is off
    cutout: int = 0                  # side of the square cut out by augmentation (0: off)
    shear: float = 0.0               # augmentation: max shear, degrees (0: off)
    invert: float = 0.0              # augmentation: probability of inverting a digit's colours
    shuffle_channels: bool = False   # augmentation: permute the colour channels
    swap_sides: float = 0.0          # augmentation: probability of another crop's side strips (neighbours)
    mixup: float = 0.0               # mixup's Beta(alpha, alpha) parameter (0: off)
    cutmix: float = 0.0              # CutMix's Beta(alpha, alpha) parameter (0: off; not with mixup)
    teachers: list[str] = field(default_factory=list)  # run folders whose mean prediction is also a target
    distill_weight: float = 0.5      # share of the loss that follows the teachers (when there are any)
    distill_online: bool = False     # teachers read each augmented batch, not the plain digits once
    init: str | None = None          # start from this run folder's (or .pt's) weights, e.g. a synthetic pretraining
    synthetic: int = 0               # synthetic digit crops added to the training split
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "auto"          # auto (bf16 on a GPU or a CPU with bf16 units, else fp32) | fp32 | bf16
    threads: int | None = None       # CPU threads; None: all cores
    extra: dict = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """Fill every None from the model's defaults and the recipe."""
        spec = model_spec(self.model)
        self.check_ranges()
        cfg = copy.deepcopy(self)
        cfg.epochs = cfg.epochs or spec.epochs
        cfg.batch_size = cfg.batch_size or spec.batch_size
        cfg.lr = cfg.lr or spec.lr
        cfg.channels = cfg.channels or spec.channels
        cfg.recipe = cfg.recipe or spec.recipe
        if cfg.recipe not in RECIPES:
            raise ModelError(f"unknown recipe '{cfg.recipe}'; choose from {', '.join(RECIPES)}")
        for key, value in RECIPES[cfg.recipe].items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        if cfg.channels not in (1, 3):
            raise ModelError(f"channels must be 1 or 3, got {cfg.channels!r}")
        if cfg.sam < 0:
            raise ModelError(f"sam (the radius rho) must be 0 or more, got {cfg.sam}")
        if cfg.mixup < 0 or cfg.cutmix < 0 or (cfg.mixup and cfg.cutmix):
            raise ModelError(f"mixup and cutmix take an alpha of 0 or more, and one at a time; got mixup "
                             f"{cfg.mixup}, cutmix {cfg.cutmix}")
        if cfg.checkpoint not in ("best", "last"):
            raise ModelError(f"checkpoint must be 'best' or 'last', got '{cfg.checkpoint}'")
        if cfg.schedule not in SCHEDULES:
            raise ModelError(f"unknown schedule '{cfg.schedule}'; choose from {', '.join(SCHEDULES)}")
        if cfg.precision not in PRECISIONS:
            raise ModelError(f"unknown precision '{cfg.precision}'; choose from {', '.join(PRECISIONS)}")
        if cfg.optimizer not in OPTIMIZERS:
            raise ModelError(f"unknown optimizer '{cfg.optimizer}': use {' or '.join(OPTIMIZERS)}")
        return cfg

    def check_ranges(self) -> None:
        """Numbers out of range would otherwise train nonsense quietly (0 epochs meaning the default,
        a negative batch size meaning 1) or fail deep inside PyTorch."""
        refuse_non_finite(self)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and not is_whole(value):
                raise ModelError(f"{name.replace('_', '-')} must be a whole number, got {value!r}")
            if value is not None and value < 1:
                raise ModelError(f"{name.replace('_', '-')} must be 1 or more, got {value}")
        if self.batch_size is not None and self.batch_size < 2:   # BatchNorm cannot train on one image
            raise ModelError(f"batch-size must be 2 or more (batch normalisation needs two images), "
                             f"got {self.batch_size}")
        if not 0 < self.val_fraction < 1:
            raise ModelError(f"val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}: "
                             "validation picks best.pt and fits the temperature")
        check_shared_ranges(self.lr, self.fold, self.n_folds, self.threads)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    best_val_acc: float
    train_seconds: float
    config: TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (AdamW when there is weight decay) or SGD; biases and norm scales are never decayed."""
    params = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay or 0.0},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer != "adam":
        raise ModelError(f"unknown optimizer '{cfg.optimizer}': use {' or '.join(OPTIMIZERS)}")
    if cfg.weight_decay:
        return torch.optim.AdamW(params, lr=cfg.lr, eps=1e-7)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-7)


class _Dist:
    """Who we are under torchrun (rank, world size); a single process is rank 0 of 1."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device   # NCCL reduces tensors on the GPU only
        self.owned = self.world > 1 and not torch.distributed.is_initialized()
        if self.owned:
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def close(self) -> None:
        """Wait for every rank, then end the group we began: a rank leaving with it live aborts
        ("terminate called without an active exception") and torchrun fails the whole run."""
        if self.owned:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.item() / self.world


def epoch_batches(n: int, batch_size: int, world: int) -> list[tuple[int, int]]:
    """(start, stop) of each rank's batches in its shard of an epoch's n shuffled images.

    Every rank gets the same number of batches (DDP's all-reduce waits for each rank's step), and
    a last batch of one image joins the one before it (BatchNorm cannot train on a single image).
    """
    shard = math.ceil(n / world)   # the shuffled order is padded to world * shard images
    per_rank = max(1, batch_size // world)
    bounds = [(i, min(i + per_rank, shard)) for i in range(0, shard, per_rank)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], shard)]
    return bounds


def refuse_non_finite(config) -> None:
    """nan passes every range check (each comparison is False) and inf some: refuse both by name."""
    for f in fields(config):
        value = getattr(config, f.name)
        for number in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(number, float) and not math.isfinite(number):
                raise ModelError(f"{f.name.replace('_', '-')} must be a finite number, got {number}")


def check_shared_ranges(lr: float | None, fold: int | None, n_folds: int, threads: int | None) -> None:
    """The settings digit and reader runs share, each either None (a default) or in range."""
    for name, value in (("fold", fold), ("threads", threads)):
        if value is not None and not is_whole(value):
            raise ModelError(f"{name} must be a whole number, got {value!r}")
    if lr is not None and not (isinstance(lr, (int, float, np.number)) and math.isfinite(lr) and lr > 0):
        raise ModelError(f"lr must be a number above 0, got {lr}")
    if n_folds < 2 or (fold is not None and not 0 <= fold < n_folds):
        raise ModelError(f"fold must be 0..{n_folds - 1} (of {n_folds} folds), got {fold}")
    if threads is not None and threads < 1:
        raise ModelError(f"threads must be 1 or more, got {threads}")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains the
    small CNNs 1.2-2.5x faster; without those units PyTorch emulates it, 5-10x slower than fp32."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether to train under bf16 autocast: asked for, or "auto" on a GPU or a CPU with bf16 units."""
    if precision == "auto":
        return device.type == "cuda" or cpu_has_bf16()
    return precision == "bf16"


def as_tensor_nchw(images: np.ndarray) -> torch.Tensor:
    """Keep pixels as they are stored (uint8, or float for the course file), channels first."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


TTA_SHIFTS = ((0, 0), (0, 2), (0, -2), (2, 0), (-2, 0))


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate by whole pixels, replicating the border (no wrap-around)."""
    if dy == dx == 0:
        return x
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    h, w = x.shape[2:]
    return pad[:, :, 2 - dy:2 - dy + h, 2 - dx:2 - dx + w]


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 1024,
                   device: torch.device | str = "cpu", tta: bool = False) -> torch.Tensor:
    """Logits for (N, C, 32, 32) stored pixels (or (N, 32, 32, C) arrays), in big eval batches.

    `tta` averages log-probabilities over the image and four 2-pixel shifts.
    """
    if isinstance(images, np.ndarray):
        images = as_tensor_nchw(images)
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = pixels_to_tensor(images[i:i + batch_size]).to(device)
        if tta:
            views = [_shifted(x, dy, dx) for dy, dx in TTA_SHIFTS]
            logits = torch.stack([F.log_softmax(model(v.contiguous(memory_format=torch.channels_last)).float(), 1)
                                  for v in views]).mean(0)
        else:
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """The learning-rate schedule, stepped once a batch: None (constant), OneCycle (a quarter of the
    steps warming up from lr/25, then cosine down, momentum cycled against it), or cosine (linear
    warm-up over COSINE_WARMUP of the steps, then cosine from lr to 0)."""
    if cfg.schedule == "onecycle":
        # torch ends the warm-up at step pct_start * total - 1 and divides by that: at 0 (4 steps) it
        # divides by zero, so runs of 2-5 steps warm up over 1.5 steps instead of a quarter.
        pct_start = max(0.25, 1.5 / total_steps) if total_steps >= 2 else 0.25
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                   pct_start=pct_start)
    if cfg.schedule == "cosine":
        warm = max(1, round(COSINE_WARMUP * total_steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor | None, lam: float,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against `target` (labels or probabilities), or under mixup the blend of the
    losses against both blended images' targets."""
    loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    if perm is None:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits.float(), target[perm], label_smoothing=label_smoothing)


def _batch_loss(net: nn.Module, batch: tuple, cfg: TrainConfig, use_amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss of one batch (x, y, mixup's perm and lam, the teachers' targets or None)."""
    x, y, perm, lam, taught = batch
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = net(x)
    loss = _cross_entropy(logits, y, perm, lam, cfg.label_smoothing)
    if taught is not None:
        targets, targets_perm = taught
        loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * _cross_entropy(logits, targets, targets_perm, lam)
    return logits, loss


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, use_amp: bool) -> tuple[float, float]:
    """Validation loss and accuracy after an epoch, in the training's precision (bf16 halves the
    pass, a fifth of a cnn2 epoch in fp32); the temperature and every reported figure are fp32."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = predict_logits(model, x, device=device)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def initial_checkpoint(cfg: TrainConfig) -> tuple[Path, dict]:
    """The checkpoint `--init` names, read and checked: its model and channels must be this run's
    (`cfg` resolved). The CLI calls it before saying an old run will be replaced."""
    path = checkpoint_path(cfg.init, option="--init")
    state = read_digit_checkpoint(path)
    if (state.get("model"), state.get("channels")) != (cfg.model, cfg.channels):
        raise ModelError(f"{path}: --init holds a {state.get('model')} with {state.get('channels')} channel(s); "
                         f"this run trains a {cfg.model} with {cfg.channels}")
    return path, state


def load_initial_weights(model: nn.Module, cfg: TrainConfig) -> None:
    """Start from another run's weights (fine-tuning)."""
    path, state = initial_checkpoint(cfg)
    fit_weights(model, state["model_state"], path, cfg.model)


def teacher_targets(runs: list[str], digits: DigitSet) -> torch.Tensor:
    """The teachers' mean probabilities for each training digit, computed once on the plain
    images (distillation of an ensemble; augmented views then follow their image's target)."""
    probs = []
    for run in runs:
        teacher = load_model(run)
        probs.append(torch.softmax(predict_logits(teacher.model, digits.with_channels(teacher.channels).images), 1))
    return torch.stack(probs).mean(0)


def load_teachers(runs: list[str], device: torch.device) -> list[nn.Module]:
    """The teacher networks, for distillation on each augmented (and mixed) batch as the student sees it."""
    return [load_model(run).model.to(device).to(memory_format=torch.channels_last).eval() for run in runs]


@torch.no_grad()
def teachers_read(teachers: list[nn.Module], x: torch.Tensor, use_amp: bool) -> torch.Tensor:
    """The teachers' mean probabilities for this very batch (a mixed image gets one blended target)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        return torch.stack([torch.softmax(t(x).float(), 1) for t in teachers]).mean(0)


def sam_second_gradient(model: nn.Module, rho: float, loss_fn: Callable[[], torch.Tensor]) -> None:
    """Sharpness-aware minimisation (Foret et al. 2021): replace the gradients already in `model`
    by those at the weights moved `rho` up the gradient, so the step favours flat minima."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.norm(torch.stack([p.grad.norm() for p in params]))
    scale = rho / (norm + 1e-12)
    moves = []
    with torch.no_grad():
        for p in params:
            moves.append(p.grad * scale)
            p.add_(moves[-1])
    for p in params:
        p.grad = None
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:          # the moved weights' batch statistics must not enter the running ones
        m.momentum = 0.0
    loss_fn().backward()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    with torch.no_grad():
        for p, move in zip(params, moves):
            p.sub_(move)


class _EMA:
    """An exponential moving average of the weights (and a copy of the buffers)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def split_for_training(data: DigitData, cfg: TrainConfig) -> tuple[DigitSet, DigitSet]:
    """Validation: the course file's own fraction split, else by source photo where known.

    With `all_data` the test split joins the pool validation is cut from (a final model, once the
    recipe's held-out figures are known); without source photos it joins the training side, as a
    fraction cut would take it whole for validation. Synthetic crops, when asked for, join the training side
    only, so validation stays real.
    """
    pool = data.train.joined(data.test) if cfg.all_data else data.train
    if cfg.all_data and pool.sources is None:
        # No photos to split by: the Keras-style cut takes the pool's last fraction, which would be
        # the test split itself. Cut it from the train split and train on all of the test split.
        pool = data.train
    if not len(pool):
        raise DataFormatError(f"{data.name}: holds no training digits, only a test split (a test file alone "
                              "is for evaluate; train on the train file, with the test file beside it)")
    train_set, val_set = validation_split(pool, cfg.val_fraction, cfg.fold, cfg.n_folds)
    if not len(train_set) or not len(val_set):   # no best.pt, no temperature: refuse rather than write neither
        side = "training" if not len(train_set) else "validation"
        split = f"--fold {cfg.fold}" if cfg.fold is not None else f"--val-fraction {cfg.val_fraction}"
        raise DataFormatError(f"{data.name}: {split} leaves no {side} digits of its {len(pool)}; "
                              "give more data or another split")
    val_digits, train_digits = np.unique(val_set.labels), np.unique(train_set.labels)
    if pool.sources is None and len(val_set) >= 100 and len(val_digits) <= len(train_digits) // 2:
        # Keras' unshuffled last fraction of a file sorted by label: validation would score two digits
        raise DataFormatError(
            f"{data.name}: the validation split (its last {len(val_set)} digits, unshuffled as Keras' "
            f"validation_split) holds only digit(s) {', '.join(map(str, val_digits))}: the file looks sorted "
            "by label; shuffle it, or save source_image so photos are split instead")
    if cfg.all_data and pool is data.train:
        train_set = train_set.joined(data.test)
    if cfg.synthetic:
        from housenum.data.synthetic import synthetic_digits

        extra = synthetic_digits(cfg.synthetic, seed=cfg.seed + 1000).with_channels(train_set.channels)
        train_set = train_set.joined(extra)
    return train_set, val_set


def train(config: TrainConfig, run_dir: str | Path, *, data: DigitData | None = None,
          resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `config.model` and write the run folder; see the module docstring.

    `data` is data already loaded (to share one load between runs); config.json then records the
    spec it was loaded from (`DigitData.spec`) as the run's data, which `evaluate` and `--resume`
    load again. Data built by hand has no spec: the run records `config.data`.
    """
    run_dir = Path(run_dir)
    cfg = config.resolved()
    if run_dir.exists() and not run_dir.is_dir():
        raise ModelError(f"{run_dir} is a file; the run folder must be a folder (give another "
                         f"{'--resume' if resume else '--out'})")
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    dist = _Dist(device)
    seed_everything(cfg.seed)

    state = None
    if resume:
        state = read_checkpoint(run_dir / "last.pt")
        if state.get("kind") == "housenum-reader/1":
            raise ModelError(f"{run_dir}: a whole-number reader run; continue it with "
                             f"`housenum train-reader --resume {run_dir}`")
        resumable = {"model_state", "config", "optimizer_state", "generator_state", "history", "epoch", "best_val_acc"}
        if not resumable <= state.keys() or "model" not in state["config"]:   # a best.pt or shipped .pt
            raise ModelError(f"{run_dir}/last.pt: holds a model but not the state to resume it (no optimiser "
                             f"state); start a new run from its weights with --init {run_dir}")
        cfg = TrainConfig.from_dict(state["config"])
        if "precision" not in state["config"]:  # saved before `precision`: such runs used bf16 on a GPU only
            cfg.precision = "bf16" if device.type == "cuda" else "fp32"
        if config.epochs and config.epochs != cfg.epochs:
            check_resumed_epochs(cfg, config.epochs, state["epoch"])
            cfg.epochs = config.epochs
    if data is None:
        data = load_digits(cfg.data, cfg.channels)
    elif not isinstance(data, DigitData):
        raise TypeError(f"data= takes the loaded data (load_digits(spec)), not a {type(data).__name__}; "
                        "name a spec as TrainConfig(data=...)")
    else:
        if data.spec is not None and state is None:
            cfg.data = data.spec   # config.json records what trained, which evaluate and --resume load
        data = data.with_channels(cfg.channels)
    train_set, val_set = split_for_training(data, cfg)
    x_train, y_train = as_tensor_nchw(train_set.images), torch.from_numpy(train_set.labels)
    x_val, y_val = as_tensor_nchw(val_set.images), torch.from_numpy(val_set.labels)
    online_teachers = load_teachers(cfg.teachers, device) if cfg.teachers and cfg.distill_online else None
    soft = teacher_targets(cfg.teachers, train_set) if cfg.teachers and not cfg.distill_online else None
    if device.type == "cuda":
        x_train, y_train = x_train.pin_memory(), y_train.pin_memory()

    model = create_model(cfg.model, cfg.channels)
    if cfg.init and state is None:
        load_initial_weights(model, cfg)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = len(epoch_batches(len(x_train), cfg.batch_size, dist.world))
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    ema = _EMA(model, cfg.ema) if cfg.ema else None
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_amp = use_bf16(device, cfg.precision)
    aug = Augment(cutout=cfg.cutout, shear=cfg.shear, invert=cfg.invert, shuffle_channels=cfg.shuffle_channels,
                  swap_sides=cfg.swap_sides) if cfg.augment else None
    gen = torch.Generator().manual_seed(cfg.seed)

    history: list[dict] = []
    best_val_acc, start_epoch, elapsed = -1.0, 0, 0.0
    if state is not None:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if scheduler is not None and state.get("scheduler_state"):
            scheduler.load_state_dict(state["scheduler_state"])
        if ema is not None and state.get("ema_state"):
            ema.model.load_state_dict(state["ema_state"])
        gen.set_state(state["generator_state"])
        if state.get("torch_rng_state") is not None:   # dropout draws from it
            torch.set_rng_state(state["torch_rng_state"])
        history, best_val_acc = state["history"], state["best_val_acc"]
        start_epoch, elapsed = state["epoch"], state.get("train_seconds", 0.0)

    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if state is not None:
            _write_run_config(run_dir, cfg, model)

    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(x_train), generator=gen)
        padding = -len(order) % dist.world   # a few images twice, so that the shards are even
        shard = torch.cat([order, order[:padding]])[dist.rank::dist.world]
        batches = epoch_batches(len(x_train), cfg.batch_size, dist.world)
        bar = _progress(len(batches), epoch, cfg.epochs, enabled=progress and dist.main)
        loss_sum = correct = seen = 0
        lr_used = optimizer.param_groups[0]["lr"]
        for start, stop in batches:
            idx = shard[start:stop]
            x = pixels_to_tensor(x_train[idx]).to(device, non_blocking=True)
            y = y_train[idx].to(device, non_blocking=True)
            if aug is not None:
                x = augment_batch(x, aug, gen)
            perm, lam = None, 1.0
            if cfg.mixup:
                x, perm, lam = mixup(x, cfg.mixup, gen)
            elif cfg.cutmix:
                x, perm, lam = cutmix(x, cfg.cutmix, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            taught = None    # the teachers' targets, blended as the images were when computed once
            if soft is not None:
                taught = (soft[idx].to(device, non_blocking=True), perm)
            elif online_teachers:
                taught = (teachers_read(online_teachers, x, use_amp), None)
            batch = (x, y, perm, lam, taught)
            optimizer.zero_grad(set_to_none=True)
            logits, loss = _batch_loss(net, batch, cfg, use_amp)
            loss.backward()
            if cfg.sam:
                sam_second_gradient(model, cfg.sam, lambda b=batch: _batch_loss(net, b, cfg, use_amp)[1])
            lr_used = optimizer.param_groups[0]["lr"]   # history's: torch's OneCycle rises again past its end
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if ema is not None:
                ema.update(model, step)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
                bar.update()
        eval_model = ema.model if ema is not None else model
        val_loss, val_acc = _evaluate(eval_model, x_val, y_val, device, use_amp)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        row = {"epoch": epoch + 1, "loss": dist.mean(loss_sum / max(seen, 1)),
               "acc": dist.mean(correct / max(seen, 1)), "val_loss": val_loss, "val_acc": val_acc,
               "seconds": round(seconds, 3), "lr": lr_used}
        history.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['acc']:.4f}",
                            val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}", time=f"{seconds:.1f}s")
            bar.close()
        if not (math.isfinite(row["loss"]) and math.isfinite(val_loss)):
            kept = (f"{run_dir}/last.pt keeps epoch {epoch}" if epoch > start_epoch or state is not None
                    else "nothing of this run was saved")
            raise ModelError(f"training diverged in epoch {epoch + 1}: the loss became {row['loss']:.4g} "
                             f"(validation {val_loss:.4g}); {kept}. Try a lower --lr")
        improved = val_acc > best_val_acc or cfg.checkpoint == "last"   # every rank: each returns it
        best_val_acc = val_acc if improved else best_val_acc
        if dist.main:
            if state is None and epoch == start_epoch:   # only now does a new run replace the folder's old one
                clear_old_run(run_dir)
                _write_run_config(run_dir, cfg, model)
            ckpt = {"model": cfg.model, "channels": cfg.channels, "config": asdict(cfg),
                    "model_state": eval_model.state_dict(), "epoch": epoch + 1, "history": history,
                    "train_seconds": elapsed, "best_val_acc": best_val_acc}
            if improved:
                save_checkpoint(run_dir / "best.pt", ckpt)
            save_checkpoint(run_dir / "last.pt", {
                **ckpt, "model_state": model.state_dict(),
                "ema_state": ema.model.state_dict() if ema is not None else None,
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
                "generator_state": gen.get_state(), "torch_rng_state": torch.get_rng_state()})
            _write_history(run_dir, history, cfg.model, kept_epoch(history, cfg.checkpoint))
        if on_epoch is not None:
            on_epoch(row)
    if dist.main and (run_dir / "best.pt").exists():
        _calibrate(run_dir / "best.pt", x_val, y_val)
    dist.close()
    return TrainResult(run_dir, history, best_val_acc, elapsed, cfg)


def _write_run_config(run_dir: Path, cfg: TrainConfig, model: nn.Module) -> None:
    write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    write_text(run_dir / "summary.txt", model_summary(model, cfg.channels, cfg.model))


def _calibrate(best_path: Path, x_val: torch.Tensor, y_val: torch.Tensor) -> None:
    """Fit a temperature for the best checkpoint on validation data and store it beside the weights."""
    state = read_checkpoint(best_path)
    model = create_model(state["model"], state["channels"])
    model.load_state_dict(state["model_state"])
    state["temperature"] = fit_temperature(predict_logits(model, x_val), y_val)
    save_checkpoint(best_path, {k: v for k, v in state.items() if k != "format"})


def _progress(total: int, epoch: int, epochs: int, enabled: bool):
    """An epoch's bar (None when off), updated by hand so that the epoch's validation figures land on
    it before it closes; into a log file rather than a terminal it redraws every 30 s, not per batch."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=True, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 30)


def check_resumed_epochs(cfg: TrainConfig, epochs: int, done: int) -> None:
    """--resume --epochs N: a constant learning rate can run on; a one-cycle or cosine schedule was laid
    out over the run's own epochs, and stretching it mid-run would restart its decay."""
    if epochs < done:
        raise ModelError(f"--epochs {epochs}: the run has already trained {done} epochs")
    if cfg.schedule != "constant":
        raise ModelError(f"--epochs {epochs}: the run's {cfg.schedule} schedule spans its {cfg.epochs} epochs and "
                         f"cannot be stretched; resume without --epochs, or start a longer run from its weights "
                         f"with --init")


def kept_epoch(history: list[dict], checkpoint: str) -> int:
    """The epoch best.pt holds: the last one, or the first with the best validation accuracy."""
    if checkpoint == "last":
        return history[-1]["epoch"]
    return max(history, key=lambda h: h["val_acc"])["epoch"]   # max keeps the first of equals, as training does


def _write_history(run_dir: Path, history: list[dict], title: str, kept: int) -> None:
    with atomic_open(run_dir / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plots.save(plots.curves(history, f"{title}: accuracy and loss per epoch", kept), run_dir / "curves.png")

"""A Keras-style text summary: one row per layer with its output shape and parameter count."""

from __future__ import annotations

import torch
from torch import nn


def model_summary(model: nn.Module, channels: int, title: str = "") -> str:
    rows: list[tuple[str, str, int]] = []
    hooks = []

    def hook(module: nn.Module, _inp, out) -> None:
        own = sum(p.numel() for p in module.parameters(recurse=False))
        own += sum(b.numel() for n, b in module.named_buffers(recurse=False) if n.startswith("running_"))
        shape = "(None, " + ", ".join(str(d) for d in out.shape[1:]) + ")"
        rows.append((f"{module.__class__.__name__}", shape, own))

    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, channels, 32, 32, device=next(model.parameters()).device))
    model.train(was_training)
    for h in hooks:
        h.remove()
    total = sum(r[2] for r in rows)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    line = "=" * 64
    out = [f'Model: "{title}"', line, f"{'Layer (type)':<28}{'Output Shape':<22}{'Param #':>12}", line]
    out += [f"{f'{n} ({i})':<28}{s:<22}{p:>12,}" for i, (n, s, p) in enumerate(rows)]
    out += [line, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}", line]
    return "\n".join(out) + "\n"

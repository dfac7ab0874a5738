"""The figures a data scientist expects: samples, class balance, curves, confusion, mistakes."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np

from housenum.errors import HousenumError
from housenum.io import atomic_path


def save(fig, path: Path) -> Path:
    """A figure in the format its file name asks for (PNG when it names none), written atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        plt.close(fig)
        raise HousenumError(f"{path}: cannot write a figure as '.{fmt}'; use .png, .jpg, .svg or .pdf")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _show(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(images, titles: list[str], cols: int, cell: tuple[float, float], title: str):
    """A figure of images in a grid, each with its title; returns it and the axes used, in order."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell[0], rows * cell[1]), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    used = list(axes.flat[:len(images)])
    for ax, img, t in zip(used, images, titles):
        ax.axis("on")
        _show(ax, img)
        ax.set_title(t, fontsize=8)
    if title:   # above the figure's top edge, so it never covers the first row's titles
        fig.suptitle(title, y=1.0, va="bottom")
    return fig, used


def image_grid(images: np.ndarray, titles: list[str], cols: int = 10, title: str = "",
               cell: tuple[float, float] = (1.1, 1.3)):
    """Images in a grid, `cell` inches (width, height) each with its title."""
    return _grid(images, titles, cols, cell, title)[0]


def photo_grid(photos: list[np.ndarray], outlines: list[list[tuple]], titles: list[str], cols: int = 6,
               title: str = "", cell: tuple[float, float] = (2.2, 1.6)):
    """Whole photos of any size in a grid, each with its title and `outlines`: (left, top, width,
    height, colour) boxes in its pixels, drawn at the screen's resolution so that a box on a large
    photo stays visible (colours: TRUTH_COLOUR, FOUND_COLOUR, ...)."""
    from matplotlib.patches import Rectangle

    fig, axes = _grid(photos, titles, cols, cell, title)
    for ax, boxes in zip(axes, outlines):
        for left, top, w, h, colour in boxes:
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor=np.divide(colour, 255),
                                   linewidth=1.5))
    return fig


def class_balance(counts: dict[str, np.ndarray], title: str = "Class balance"):
    """Images per digit, one bar per split (the legend outside the bars)."""
    fig, ax = plt.subplots(figsize=(7.5, 3))
    width = 0.8 / len(counts)
    for i, (split, c) in enumerate(counts.items()):
        ax.bar(np.arange(10) + i * width, c, width, label=split)
    ax.set_xticks(np.arange(10) + 0.4 - width / 2, [str(d) for d in range(10)])
    ax.set_xlabel("digit")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def number_balance(by_length: dict[str, int], per_digit: list[int], title: str = ""):
    """Whole photos' balance: numbers per length beside digits per value, each bar labelled."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3), width_ratios=(1, 2), layout="constrained")
    for ax, keys, values, xlabel, ylabel in (
            (left, list(by_length), list(by_length.values()), "digits in the number", "photos"),
            (right, [str(d) for d in range(10)], per_digit, "digit", "digits")):
        ax.bar_label(ax.bar(keys, values), fontsize=7, padding=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
    left.set_title("Number lengths")
    right.set_title("Digits")
    if title:
        fig.suptitle(title)
    return fig


def model_comparison(rows: list[dict]):
    """Validation and test accuracy of each model side by side: the leaderboard as a picture."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(rows) + 2), 3.2))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.2, "val_acc", "validation"), (0.2, "test_acc", "test")):
        bars = ax.bar(x + offset, [r[key] for r in rows], 0.4, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, [r["model"] for r in rows])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.1)
    ax.set_title("Accuracy by model (the selected one has the best validation accuracy)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def curves(history: list[dict], title: str = "", kept_epoch: int | None = None):
    """Training and validation accuracy and loss per epoch; `kept_epoch`, the epoch whose weights
    the run kept (best.pt), is marked on both."""
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in ((a1, "acc"), (a2, "loss")):
        ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {key}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label=f"validation {key}")
        if kept_epoch is not None:
            ax.axvline(kept_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept (epoch {kept_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))   # no epoch 1.5
        if epochs:   # half an epoch each side: a 1-epoch run's axis would otherwise span 0.95..1.05, no integer in it
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "Training curves")
    return fig


def reader_curves(history: list[dict], title: str = ""):
    """A reader run's epochs, each quantity on its own axes: the training loss (the reader's objective on
    true-box crops) and the validation -log P(true number) (whole photos through the localiser) are not
    the same measure, so each has its own axes. A part the run does not train has no figures (NaN),
    and its panel says so."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    panels = [
        ("whole-number accuracy", [("acc", "train (true-box crops)"), ("val_acc", "validation photos")]),
        ("reader training loss", [("loss", "train objective")]),
        ("validation -log P(true number)", [("val_loss", "validation photos")]),
        ("localiser training loss", [("loc_loss", "train")]),
        ("localiser validation IoU", [("val_iou", "validation photos")]),
        ("learning rate", [("lr", "at the epoch's end")]),
    ]
    for ax, (name, series) in zip(axes.flat, panels):
        drawn = 0
        for key, label in series:
            values = [float(h.get(key, float("nan"))) for h in history]
            if all(np.isnan(values)):
                continue
            ax.plot(epochs, values, "o-", label=label)
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "not trained or not measured\nin this run", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
            ax.set_yticks([])
        elif len(series) > 1:
            ax.legend(fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Reader training")
    fig.tight_layout()
    return fig


def confusion(matrix: np.ndarray, title: str = "Confusion matrix"):
    """Counts in the cells, coloured by the share of each true digit's images (rows sum to 1), so
    that a rare digit's errors show as much as a common one's."""
    fig, ax = plt.subplots(figsize=(6, 5))
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true digit's images")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    return fig


# One meaning per colour in every figure: green the labelled truth, red what a model found, yellow
# the number box the reader found around its digits.
TRUTH_COLOUR, FOUND_COLOUR, NUMBER_BOX_COLOUR = (0, 200, 0), (255, 40, 40), (255, 200, 0)


def reading_overlay(photo, reading, long_side: int = 640):
    """The photo (a PIL image) enlarged until its long side is at least `long_side` pixels, with the
    reader's number box (yellow), each digit's box and digit (red), and the reading with its
    confidence in a band above: SVHN photos are a hundred-odd pixels wide, too small to check by eye."""
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1.0, long_side / max(photo.size))
    width, height = round(photo.width * scale), round(photo.height * scale)
    font = ImageFont.load_default(size=max(14, long_side // 32))
    band = font.size + 12
    canvas = Image.new("RGB", (width, height + band), (255, 255, 255))
    canvas.paste(photo.convert("RGB").resize((width, height), Image.BILINEAR), (0, band))
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(scale))

    def rect(left, top, w, h, colour):
        draw.rectangle((left * scale, band + top * scale, (left + w) * scale, band + (top + h) * scale),
                       outline=colour, width=line)

    if (reading.number or reading.guess) is not None and reading.number_box is not None:
        rect(*reading.number_box, NUMBER_BOX_COLOUR)
    for left, top, w, h, digit in reading.boxes:
        rect(left, top, w, h, FOUND_COLOUR)
        x, y = left * scale, max(band, band + top * scale - font.size - 4)   # the digit above its box
        draw.rectangle(draw.textbbox((x, y), str(digit), font=font), fill=FOUND_COLOUR)
        draw.text((x, y), str(digit), fill=(255, 255, 255), font=font)
    draw.text((6, 6), reading.summary(), fill=(0, 0, 0), font=font)
    return canvas


def save_image(image, path: Path) -> Path:
    """A PIL image as PNG, written atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path

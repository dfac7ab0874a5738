"""Synthetic digits and house-number photos: determinism, layout and label consistency."""

from __future__ import annotations

import numpy as np
import pytest

from housenum.data import synthetic
from housenum.data.digits import DigitSet
from housenum.data.synthetic import synthetic_digits, synthetic_empty, synthetic_numbers
from housenum.errors import DataFormatError


@pytest.fixture(scope="module")
def digits() -> DigitSet:
    return synthetic_digits(2000, seed=7)


@pytest.fixture(scope="module")
def numbers() -> list:
    return synthetic_numbers(200, seed=3)


def test_digits_shape_dtype_labels(digits: DigitSet) -> None:
    assert digits.images.shape == (2000, 32, 32, 3)
    assert digits.images.dtype == np.uint8
    assert digits.labels.dtype == np.int64
    assert set(np.unique(digits.labels)) == set(range(10))
    assert digits.sources is None


def test_digits_labels_balanced(digits: DigitSet) -> None:
    counts = np.bincount(digits.labels, minlength=10)
    assert counts.min() >= 0.8 * counts.max()


def test_digits_deterministic_by_seed(digits: DigitSet) -> None:
    again = synthetic_digits(2000, seed=7)
    assert np.array_equal(again.images, digits.images)
    assert np.array_equal(again.labels, digits.labels)
    other = synthetic_digits(2000, seed=8)
    assert not np.array_equal(other.images, digits.images)


def test_digits_small_and_invalid_n() -> None:
    assert synthetic_digits(20, seed=5).images.shape == (20, 32, 32, 3)
    assert len(synthetic_digits(0, seed=5)) == 0
    with pytest.raises(DataFormatError):
        synthetic_digits(-1, seed=5)


def test_digits_are_not_blank(digits: DigitSet) -> None:
    spread = digits.images.reshape(len(digits), -1).astype(np.float32).std(axis=1)
    assert np.median(spread) > 15
    assert np.mean(spread < 3) < 0.01


def test_digits_ink_is_central(digits: DigitSet) -> None:
    """The labelled digit sits in the middle: the centre differs from the background more."""
    grey = digits.images.astype(np.float32).mean(axis=3)
    edge = np.concatenate(
        [grey[:, :3].reshape(len(grey), -1), grey[:, -3:].reshape(len(grey), -1)], 1
    )
    centre_contrast = np.abs(grey[:, 10:22, 12:20] - np.median(edge, 1)[:, None, None]).mean()
    corner_contrast = np.abs(grey[:, :4, :4] - np.median(edge, 1)[:, None, None]).mean()
    assert centre_contrast > 1.5 * corner_contrast


def test_numbers_labels_and_boxes(numbers: list) -> None:
    for image, label, boxes in numbers:
        height, width = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert 64 <= width <= 320 and 64 <= height <= 320
        assert 0.45 <= width / height <= 2.6  # aspect 0.5..2.5 up to pixel rounding
        assert label.isdigit() and 1 <= len(label) <= 5
        assert "".join(str(b[4]) for b in boxes) == label
        for left, top, w, h, digit in boxes:
            assert all(isinstance(v, int) for v in (left, top, w, h, digit))
            assert 0 <= digit <= 9
            assert w >= 1 and h >= 1
            assert left >= 0 and top >= 0 and left + w <= width and top + h <= height
        lefts = [b[0] + b[2] / 2 for b in boxes]
        assert lefts == sorted(lefts), "boxes are in reading order"


def test_numbers_lengths_all_occur_mostly_two_or_three(numbers: list) -> None:
    lengths = np.bincount([len(label) for _, label, _ in numbers], minlength=6)
    assert all(lengths[1:6] > 0)
    assert lengths[2] + lengths[3] > 0.5 * len(numbers)


def test_numbers_vary_in_size_and_position(numbers: list) -> None:
    sizes = {image.shape[:2] for image, _, _ in numbers}
    assert len(sizes) > 100
    span = np.array(
        [
            (max(b[0] + b[2] for b in boxes) - min(b[0] for b in boxes)) / image.shape[1]
            for image, _, boxes in numbers
        ]
    )
    assert span.min() < 0.2 and span.max() > 0.4
    centre = np.array(
        [
            (min(b[0] for b in boxes) + max(b[0] + b[2] for b in boxes)) / 2 / image.shape[1]
            for image, _, boxes in numbers
        ]
    )
    assert centre.min() < 0.35 and centre.max() > 0.65


def test_numbers_ink_differs_from_surroundings(numbers: list) -> None:
    """Inside the digit boxes the pixels vary (a digit is drawn there), on average clearly."""
    spreads = [
        image[t : t + h, x : x + w].astype(np.float32).std()
        for image, _, boxes in numbers
        for x, t, w, h, _ in boxes
        if w > 2 and h > 2
    ]
    assert np.median(spreads) > 15


def test_numbers_and_empty_deterministic(numbers: list) -> None:
    again = synthetic_numbers(5, seed=3)
    for (a, la, ba), (b, lb, bb) in zip(again, numbers[:5], strict=True):
        assert np.array_equal(a, b) and la == lb and ba == bb
    assert [label for _, label, _ in synthetic_numbers(20, seed=4)] != [
        label for _, label, _ in numbers[:20]
    ]
    empty = synthetic_empty(5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(empty, synthetic_empty(5, seed=1), strict=True))
    assert all(e.dtype == np.uint8 and e.ndim == 3 and e.shape[2] == 3 for e in empty)


def test_numbers_size_range_respected() -> None:
    for image, _, boxes in synthetic_numbers(20, seed=0, size_range=(100, 150)):
        assert 100 <= min(image.shape[:2]) and max(image.shape[:2]) <= 150
        assert boxes
    with pytest.raises(DataFormatError):
        synthetic_numbers(1, seed=0, size_range=(0, 10))


def test_bare_machine_uses_default_font(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no TrueType fonts found, PIL's built-in font still gives digits and numbers."""
    monkeypatch.setattr(synthetic, "font_paths", lambda: ())
    synthetic._glyph_cache.cache_clear()
    try:
        data = synthetic_digits(50, seed=0)
        assert data.images.shape == (50, 32, 32, 3)
        assert data.images.std() > 10
        _, label, boxes = synthetic_numbers(1, seed=0)[0]
        assert "".join(str(b[4]) for b in boxes) == label
    finally:
        synthetic._glyph_cache.cache_clear()

"""The confidence figures the model card and `housenum evaluate` report, on cases worked by hand."""

import numpy as np
import pytest
import torch

from housenum.data import data_files
from housenum.evaluate import accuracy_at_coverage, expected_calibration_error, score, trained_on_test_split
from housenum.models.layers import fit_temperature


def one_hot_ish(predicted: list[int], confidence: list[float]) -> np.ndarray:
    """Probabilities whose top digit is `predicted` at `confidence`, the rest spread evenly."""
    probs = np.zeros((len(predicted), 10))
    for row, (digit, conf) in enumerate(zip(predicted, confidence)):
        probs[row] = (1 - conf) / 9
        probs[row, digit] = conf
    return probs


def test_expected_calibration_error_by_hand():
    # three at 0.9 (two right: |0.9 - 2/3|), 3/5 of the digits; two at 0.55 (both right: |0.55 - 1|), 2/5
    probs = one_hot_ish([3, 3, 3, 5, 7], [0.9, 0.9, 0.9, 0.55, 0.55])
    labels = np.array([3, 4, 3, 5, 7])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.6 * (0.9 - 2 / 3) + 0.4 * 0.45)
    sure_and_right = one_hot_ish([1, 2, 3], [1.0, 1.0, 1.0])
    assert expected_calibration_error(sure_and_right, np.array([1, 2, 3])) == pytest.approx(0)


def test_accuracy_at_coverage_keeps_the_surest():
    # confidence falls with the index; the five surest hold one mistake (index 1)
    conf = np.linspace(0.99, 0.5, 10)
    predicted = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    labels = np.array([0, 9, 2, 3, 4, 0, 0, 0, 0, 0])
    probs = one_hot_ish(predicted, list(conf))
    assert accuracy_at_coverage(probs, labels, 0.5) == pytest.approx(0.8)
    assert accuracy_at_coverage(probs, labels, 1.0) == pytest.approx(0.4)
    assert accuracy_at_coverage(probs, labels, 0.01) == 1.0     # at least one digit is kept


def test_score_agrees_with_its_parts():
    probs = one_hot_ish([3, 3, 3, 5, 7], [0.9, 0.9, 0.9, 0.55, 0.55])
    labels = np.array([3, 4, 3, 5, 7])
    result = score(probs, labels)
    assert result.accuracy == 0.8 and result.n == 5
    assert result.confusion[4, 3] == 1 and result.confusion.sum() == 5
    # F1 over the digits that occur (3, 4, 5, 7): 3 is 0.8 (precision 2/3, recall 1), 4 is 0, 5 and 7 are 1
    assert result.macro_f1 == pytest.approx((0.8 + 0 + 1 + 1) / 4)
    assert result.ece == pytest.approx(0.32)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 10, generator=gen) * 4
    labels = torch.multinomial(torch.softmax(logits / 2.0, 1), 1, generator=gen).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, abs=0.1)
    sharp = torch.multinomial(torch.softmax(logits / 0.8, 1), 1, generator=gen).squeeze(1)
    assert fit_temperature(logits, sharp) == pytest.approx(0.8, abs=0.1)


def test_a_run_trained_on_all_data_is_not_held_out_wherever_its_test_digits_turn_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / name).write_bytes(b"")
    final = {"all_data": True, "data": "train_32x32.mat"}
    assert trained_on_test_split(final, "train_32x32.mat")
    assert trained_on_test_split(final, "test_32x32.mat")            # its sibling, evaluated alone
    assert trained_on_test_split(final, str(tmp_path / "elsewhere" / "test_32x32.mat"))
    assert not trained_on_test_split({**final, "all_data": False}, "test_32x32.mat")
    assert not trained_on_test_split(final, "crops.npz")
    assert trained_on_test_split({"all_data": True, "data": "svhn"}, "svhn:extra")
    assert trained_on_test_split({"all_data": True, "data": "svhn:extra"}, "test_32x32.mat")
    assert trained_on_test_split({"all_data": True, "data": "synthetic:300"}, "synthetic")
    assert not trained_on_test_split({"all_data": True, "data": "synthetic"}, "svhn")
    # a test_32x32.mat with no train file beside it is its own test split
    (tmp_path / "train_32x32.mat").unlink()
    assert data_files("test_32x32.mat") == (frozenset({"test_32x32.mat"}),) * 2
    assert data_files("train_32x32.mat", recorded=True)[1] == frozenset({"test_32x32.mat"})

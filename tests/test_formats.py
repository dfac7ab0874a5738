"""Each loader on fixtures written in the exact official layouts, and every bad-input case."""

import zipfile

import h5py
import numpy as np
import pytest
import scipy.io

from housenum.data import load_digits
from housenum.data.formats import COURSE_KEYS, load_course_h5, read_official_mat
from housenum.data.splits import validation_split
from housenum.errors import DataFormatError


def write_official_mat(path, images, labels):
    """Official layout: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0."""
    y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"X": np.transpose(images, (1, 2, 3, 0)), "y": y})


def write_course_h5(path, crops, keys=COURSE_KEYS):
    """Course layout: greyscale float 0..255 pixels (N, 32, 32), labels 0..9, all six datasets."""
    grey = crops["X"].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    parts = {"train": slice(0, 300), "val": slice(300, 400), "test": slice(400, 500)}
    with h5py.File(path, "w") as f:
        for name, s in parts.items():
            if f"X_{name}" in keys:
                f[f"X_{name}"] = grey[s]
            if f"y_{name}" in keys:
                f[f"y_{name}"] = crops["y"][s].astype(np.int64)


@pytest.fixture
def mat_file(tmp_path, crops):
    path = tmp_path / "train_32x32.mat"
    write_official_mat(path, crops["X"][:200], crops["y"][:200])
    return path


def test_official_mat_maps_label_10_to_zero(mat_file, crops):
    digits = read_official_mat(mat_file)
    assert digits.images.shape == (200, 32, 32, 3) and digits.images.dtype == np.uint8
    np.testing.assert_array_equal(digits.images, crops["X"][:200])
    np.testing.assert_array_equal(digits.labels, crops["y"][:200])
    assert (digits.labels == 0).any() and digits.labels.max() <= 9


def test_an_official_file_saved_as_matlab_v73_reads_as_the_v5_one_does(tmp_path, crops):
    """MATLAB's `save -v7.3` writes HDF5 after a 512-byte text header, arrays in column-major order."""
    path = tmp_path / "train_32x32.mat"
    y = np.where(crops["y"][:50] == 0, 10, crops["y"][:50]).astype(np.float64).reshape(-1, 1)
    with h5py.File(path, "w", userblock_size=512) as f:
        f["X"] = np.transpose(crops["X"][:50], (1, 2, 3, 0)).T   # MATLAB (32, 32, 3, N) as HDF5 stores it
        f["y"] = y.T
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64")
    digits = read_official_mat(path)
    np.testing.assert_array_equal(digits.images, crops["X"][:50])
    np.testing.assert_array_equal(digits.labels, crops["y"][:50])
    with h5py.File(path, "r+") as f:
        del f["y"]
    with pytest.raises(DataFormatError, match="missing variable 'y'"):
        read_official_mat(path)


def test_official_train_file_uses_test_file_beside_it(mat_file, crops):
    write_official_mat(mat_file.with_name("test_32x32.mat"), crops["X"][200:260], crops["y"][200:260])
    data = load_digits(str(mat_file))
    assert (len(data.train), len(data.test)) == (200, 60)
    alone = load_digits(str(mat_file.with_name("test_32x32.mat")))   # evaluated on: all of it, not a fifth
    assert (len(alone.train), len(alone.test)) == (0, 60)
    mat_file.unlink()
    write_official_mat(mat_file.with_name("extra_32x32.mat"), crops["X"][:100], crops["y"][:100])
    assert (len(load_digits(str(mat_file.with_name("extra_32x32.mat"))).test)) == 60   # test file beside it


def test_course_h5_reads_all_six_datasets(tmp_path, crops):
    path = tmp_path / "SVHN_single_grey1.h5"
    write_course_h5(path, crops)
    data = load_course_h5(path)
    assert data.train.images.shape == (300, 32, 32, 1)
    assert data.train.images.dtype == np.float32
    assert 0 <= data.train.images.min() and data.train.images.max() <= 255
    assert (len(data.test), len(data.extra["val"])) == (100, 100)
    np.testing.assert_array_equal(data.test.labels, crops["y"][400:500])
    with pytest.raises(DataFormatError, match="greyscale only"):
        load_digits(str(path), channels=3)


def test_course_file_validation_is_the_notebooks_last_fraction(tmp_path, crops):
    path = tmp_path / "course.h5"
    write_course_h5(path, crops)
    train, val = validation_split(load_course_h5(path).train, 0.2)
    assert (len(train), len(val)) == (240, 60)
    np.testing.assert_array_equal(val.labels, crops["y"][240:300])


def test_npz_test_and_validation_splits_never_share_a_photo(small_npz):
    data = load_digits(str(small_npz))
    assert data.train.sources is not None
    assert not set(data.train.sources) & set(data.test.sources)
    train, val = validation_split(data.train)
    assert not set(train.sources) & set(val.sources)
    assert 0.1 < len(val) / len(data.train) < 0.3


def test_channels_option_converts_rgb_to_grey(small_npz):
    grey = load_digits(str(small_npz), channels=1)
    assert grey.train.images.shape[1:] == (32, 32, 1) and grey.train.images.dtype == np.uint8


def test_synthetic_is_the_offline_default():
    data = load_digits("synthetic:200")
    assert len(data.train) == 200 and data.train.images.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"this is not a matlab file at all" * 10), "not a readable MATLAB"),
])
def test_bad_mat_files(tmp_path, make, message):
    path = tmp_path / "x_32x32.mat"
    make(path)
    with pytest.raises(DataFormatError, match=message):
        read_official_mat(path)


def test_truncated_mat(mat_file):
    data = mat_file.read_bytes()
    mat_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="not a readable MATLAB"):
        read_official_mat(mat_file)


def test_mat_missing_key_and_bad_labels(tmp_path, crops):
    path = tmp_path / "a.mat"
    scipy.io.savemat(path, {"X": np.transpose(crops["X"][:5], (1, 2, 3, 0))})
    with pytest.raises(DataFormatError, match="missing variable 'y'"):
        read_official_mat(path)
    x = np.transpose(crops["X"][:5], (1, 2, 3, 0))
    for y, found in ((np.full((5, 1), 11), "found 11..11"), (np.full((5, 1), 1.5), "found 1.5..1.5"),
                     (np.array([["a"]] * 5), "found dtype <U1")):
        scipy.io.savemat(path, {"X": x, "y": y})
        with pytest.raises(DataFormatError, match=f"a.mat: labels y must be whole numbers 1..10.*{found}"):
            read_official_mat(path)
    scipy.io.savemat(path, {"X": crops["X"][:5], "y": np.ones((5, 1))})
    with pytest.raises(DataFormatError, match=r"X must be \(32, 32, 3, N\)"):
        read_official_mat(path)


def test_mat_and_course_h5_pixels_outside_0_255_are_refused_not_wrapped(tmp_path, crops):
    """Before, a .mat cast any X to uint8 (300 read as 44, NaN as 0) and the course file kept NaN,
    which trained a model with a NaN loss and exit 0."""
    path, y = tmp_path / "a_32x32.mat", np.ones((5, 1))
    x = np.transpose(crops["X"][:5], (1, 2, 3, 0))
    for pixels, found in ((x.astype(np.int64) * 4, "found [0-9]+..[0-9]+"), (np.full(x.shape, np.nan), "found NaN")):
        scipy.io.savemat(path, {"X": pixels, "y": y})
        with pytest.raises(DataFormatError, match=f"a_32x32.mat: X: pixels must be 0..255, {found}"):
            read_official_mat(path)
    scipy.io.savemat(path, {"X": x / 255.0, "y": y})     # floats 0..1 read as 0..255, as in an .npz
    assert np.abs(read_official_mat(path).images.astype(int) - crops["X"][:5]).max() <= 1
    course = tmp_path / "course.h5"
    write_course_h5(course, crops)
    scaled = load_course_h5(course).test.images
    with h5py.File(course, "a") as f:
        unit = f["X_test"][()] / 255.0
        del f["X_test"]
        f["X_test"] = unit                              # saved after the notebook's `/ 255`
    assert np.allclose(load_course_h5(course).test.images, scaled, atol=1e-3)
    with h5py.File(course, "a") as f:
        f["X_test"][0, 0, 0] = np.nan
    with pytest.raises(DataFormatError, match="course.h5: X_test: pixels must be 0..255, found NaN"):
        load_course_h5(course)
    with h5py.File(course, "a") as f:
        del f["X_test"]
        f["X_test"] = np.full((100, 32, 32), b"a")
    with pytest.raises(DataFormatError, match="X_test must hold pixel numbers"):
        load_course_h5(course)


def test_course_h5_missing_dataset_and_corrupt(tmp_path, crops):
    path = tmp_path / "course.h5"
    write_course_h5(path, crops, keys=[k for k in COURSE_KEYS if k != "X_val"])
    with pytest.raises(DataFormatError, match="missing dataset.*X_val"):
        load_course_h5(path)
    with h5py.File(path, "a") as f:
        f.create_group("X_val")                     # a group where an array belongs
    with pytest.raises(DataFormatError, match="X_val must be datasets"):
        load_course_h5(path)
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataFormatError, match="not a readable HDF5"):
        load_course_h5(path)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"X": np.zeros((4, 32, 32, 3), np.uint8)}, "missing array.*y"),
    ({"X": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(4)}, r"X must be \(N, 32, 32\)"),
    ({"X": np.zeros((4, 32, 32, 3), np.uint8), "y": np.array([0, 1, 2, 10])},
     "labels must be whole numbers 0..9: 1 are not; the first is 10, at index 3"),
    ({"X": np.zeros((3, 32, 32, 3), np.uint8), "y": np.array([0, 2.5, 1])}, "the first is 2.5, at index 1"),
    ({"X": np.zeros((4, 32, 32, 3), np.uint8), "y": np.zeros(3)}, "4 images but 3 labels"),
    ({"X": np.zeros((4, 32, 32, 2), np.uint8), "y": np.zeros(4)}, "1 or 3 channels"),
    ({"X": np.zeros((3, 32, 32), np.uint8), "y": np.array([1j, 2, 3])}, "labels must be numbers, got dtype complex"),
])
def test_bad_npz_contents(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError, match=message):
        load_digits(str(path))


def test_npz_pixels_as_floats_0_1_read_as_0_255_and_non_numbers_are_refused(tmp_path, crops):
    x, y = crops["X"][:40], crops["y"][:40]
    np.savez(tmp_path / "bytes.npz", X=x, y=y)
    np.savez(tmp_path / "unit.npz", X=x / 255.0, y=y)
    assert np.allclose(load_digits(str(tmp_path / "unit.npz")).train.images,
                       load_digits(str(tmp_path / "bytes.npz")).train.images, atol=1e-3)
    np.savez(tmp_path / "bools.npz", X=x > 128, y=y)
    with pytest.raises(DataFormatError, match="X must hold pixel numbers"):
        load_digits(str(tmp_path / "bools.npz"))


def test_corrupt_npz_and_unknown_spec(tmp_path):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:           # a zip, but of raw bytes rather than .npy arrays
        z.writestr("X", b"pixels")
        z.writestr("y", b"labels")
    with pytest.raises(DataFormatError, match="X, y not stored as numpy arrays"):
        load_digits(str(path))
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataFormatError, match="not a readable .npz"):
        load_digits(str(path))
    with pytest.raises(DataFormatError, match="unknown data 'mnist'"):
        load_digits("mnist")
    other = tmp_path / "data.csv"
    other.write_text("1,2,3")
    with pytest.raises(DataFormatError, match="unsupported file type"):
        load_digits(str(other))

"""Format 1 photo data: digitStruct.mat (MATLAB v7.3), labels.json folders, svhn-full downloads."""

from __future__ import annotations

import errno
import io
import json
import shutil
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from housenum.data import numbers
from housenum.data.numbers import load_digit_struct, load_labels_json, load_numbers, read_digit_struct
from housenum.errors import DataFormatError, HousenumError

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Dec 05 10:00:00 2011 HDF5 schema 1.00 ."


def write_digit_struct(path: Path, entries: list[tuple[str | np.ndarray, list[list[float]]]]) -> None:
    """Write `entries` (name, boxes [[left, top, width, height, digit 0..9], ...]) as MATLAB v7.3 does:
    a 512-byte header, the struct `digitStruct` with `name` and `bbox` as object references into
    `#refs#`, names as uint16 (L, 1) char arrays, one-digit fields as (1, 1) doubles, several digits
    as (k, 1) references to (1, 1) doubles, and digit 0 written as 10."""
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        counter = iter(range(1_000_000))

        def matlab(obj, cls: str):
            obj.attrs["MATLAB_class"] = np.bytes_(cls)
            return obj

        def dataset(data: np.ndarray, cls: str):
            return matlab(refs.create_dataset(f"r{next(counter)}", data=data), cls).ref

        names, bboxes = [], []
        for name, boxes in entries:   # a name that is not a str is stored as given (an odd file)
            chars = (np.frombuffer(name.encode("ascii"), np.uint8).astype(np.uint16).reshape(-1, 1)
                     if isinstance(name, str) else name)
            names.append(dataset(chars, "char"))
            group = matlab(refs.create_group(f"g{next(counter)}"), "struct")
            for column, field in enumerate(("left", "top", "width", "height", "label")):
                values = [float(b[column]) if field != "label" else float(b[4] or 10) for b in boxes]
                if len(values) == 1:
                    matlab(group.create_dataset(field, data=np.array([[values[0]]])), "double")
                else:
                    cells = np.array([[dataset(np.array([[v]]), "double")] for v in values], dtype=h5py.ref_dtype)
                    group.create_dataset(field, data=cells)
            bboxes.append(group.ref)
        struct = matlab(f.create_group("digitStruct"), "struct")
        struct.create_dataset("name", data=np.array(names, dtype=h5py.ref_dtype).reshape(-1, 1))
        struct.create_dataset("bbox", data=np.array(bboxes, dtype=h5py.ref_dtype).reshape(-1, 1))
    with open(path, "r+b") as fh:
        fh.write(MATLAB_HEADER.ljust(116, b" "))


@pytest.fixture(scope="module")
def labels(svhn_dir: Path) -> dict:
    return json.loads((svhn_dir / "numbers" / "labels.json").read_text())


@pytest.fixture(scope="module")
def real_entries(labels: dict) -> list[tuple[str, str, list]]:
    """Real photos covering one digit, several digits and the digit 0: (file, label, boxes)."""
    wanted = ["test_1.png", "test_2.png", "train_1.png", "train_2.png"]
    with_zero = next(k for k, v in labels.items() if "0" in v["label"] and len(v["label"]) > 1)
    one_zero = next(k for k, v in labels.items() if v["label"] == "0")  # one digit, written as 10
    long = next(k for k, v in labels.items() if len(v["label"]) == 4)
    files = wanted + [with_zero, one_zero, long]
    assert any(len(labels[f]["label"]) == 1 for f in files)
    return [(f, labels[f]["label"], labels[f]["boxes"]) for f in files]


def test_digit_struct_v73_parses_real_entries(tmp_path, real_entries):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [(f"{i + 1}.png", boxes) for i, (_, _, boxes) in enumerate(real_entries)])
    photos = load_digit_struct(path)
    assert photos.names == [f"{i + 1}.png" for i in range(len(real_entries))]
    assert photos.labels == [label for _, label, _ in real_entries]
    for got, (_, _, boxes) in zip(photos.boxes, real_entries):
        np.testing.assert_array_equal(got, np.rint(np.array(boxes)).astype(np.int32))
    assert any("0" in label for label in photos.labels)  # 10 in the file reads as 0
    assert (path.parent / ".digitStruct.mat.parsed.npz").is_file()


def test_byte_reader_agrees_with_h5py(tmp_path, real_entries):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [(f"{i}.png", b) for i, (_, _, b) in enumerate(real_entries)])
    with h5py.File(path, "r") as f, open(path, "rb") as fh:
        slow = numbers._H5pyEntries(f, path)
        raw = numbers._RawHDF5(fh.read(), f.userblock_size)
        name_refs = numbers._object_addresses(f["digitStruct/name"])
        bbox_refs = numbers._object_addresses(f["digitStruct/bbox"])
        for i in range(len(real_entries)):
            fast = raw.entry(int(name_refs[i]), int(bbox_refs[i]))
            assert numbers._same_entry(fast, slow.entry(i))


def test_parsed_table_is_cached(tmp_path, real_entries, monkeypatch):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [(f"{i}.png", b) for i, (_, _, b) in enumerate(real_entries)])
    first = read_digit_struct(path)
    monkeypatch.setattr(numbers, "_parse_digit_struct", lambda p: pytest.fail("cache not used"))
    second = read_digit_struct(path)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[2], second[2])


def test_digit_struct_parse_speed(tmp_path, labels):
    """The byte reader costs well under a millisecond per photo (h5py objects cost about 1 ms+)."""
    entries = [(f"{i + 1}.png", v["boxes"]) for i, v in enumerate(list(labels.values())[:300])]
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, entries)
    start = time.perf_counter()
    names, counts, _ = numbers._parse_digit_struct(path)
    seconds = time.perf_counter() - start
    assert len(names) == 300 and counts.sum() == sum(len(b) for _, b in entries)
    assert seconds / 300 < 1e-3, f"{seconds / 300 * 1e3:.2f} ms per photo"


def test_damaged_cache_is_rebuilt_and_an_entry_without_boxes_refused(tmp_path, real_entries):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [(f"{i}.png", b) for i, (_, _, b) in enumerate(real_entries)])
    first = read_digit_struct(path)
    (tmp_path / ".digitStruct.mat.parsed.npz").write_bytes(b"PK\x03\x04garbage")
    assert read_digit_struct(path)[0] == first[0]
    write_digit_struct(path, [("1.png", real_entries[0][2]), ("2.png", [])])
    with pytest.raises(DataFormatError, match=r"entry 2 \(2.png\) has no digit boxes"):
        read_digit_struct(path)
    write_digit_struct(path, [("1.png", real_entries[0][2]), ("2.png", [[1, 2, 3, 4, 5], [9, 2, 3, 4, 11]])])
    with pytest.raises(DataFormatError, match=r"entry 2 \(2.png\): box digits must be whole numbers 1..10 "
                                              r"\(10 means 0\), found 11 \(box 2\)$"):
        read_digit_struct(path)


@pytest.mark.parametrize(("name", "message"), [
    (np.array([[49.0], [46.0]]), r"entry 1 is not a name and bbox struct \(a name must be MATLAB character codes, "
                                 r"got float64"),
    (np.bytes_("1.png"), "a name must be MATLAB character codes, got |S5"),   # an HDF5 string
    (np.array([[0xFFFFFFFF]], np.uint32), "character codes must be 0..0x10FFFF"),
    ("1.png\0", r"entry 1: the name '1.png\\x00' is not a plain file name"),
    ("../other/1.png", "entry 1: the name '../other/1.png' is not a plain file name"),   # outside its folder
    ("", "entry 1: the name '' is not a plain file name"),
])
def test_a_name_that_is_no_file_beside_the_table_is_refused_in_one_line(tmp_path, real_entries, name, message):
    """Each was a traceback, a photo read from outside the folder, or (a NUL) one only on a second run."""
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [(name, real_entries[0][2])])
    for _ in range(2):   # the same answer from a parsed cache (which kept '1.png' of '1.png\0')
        with pytest.raises(DataFormatError, match=message):
            load_digit_struct(path)


def test_a_box_field_of_text_is_refused_in_one_line(tmp_path, real_entries):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [("1.png", real_entries[0][2][:1])])
    with h5py.File(path, "r+") as f:   # the group keeps its address, so the table's reference to it holds
        group = f[f["digitStruct/bbox"][0, 0]]
        del group["label"]
        group.create_dataset("label", data="7")
    with pytest.raises(DataFormatError, match="entry 1 is not a name and bbox struct \\(its bbox field 'label' "
                                              "holds text, not numbers\\)"):
        load_digit_struct(path)


def test_a_table_with_no_entries_is_refused(tmp_path):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [])
    with pytest.raises(DataFormatError, match="holds no photos"):
        load_digit_struct(path)


def test_not_a_digit_struct_is_format_error(tmp_path):
    bad = tmp_path / "digitStruct.mat"
    with h5py.File(bad, "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(DataFormatError, match="digitStruct"):
        load_digit_struct(bad)
    text = tmp_path / "text.mat"
    text.write_text("hello")
    with pytest.raises(DataFormatError, match="not a MATLAB v7.3"):
        load_digit_struct(text)


def test_labels_json_folder(svhn_dir):
    photos = load_numbers(str(svhn_dir / "numbers"))
    assert len(photos) == 2504
    test = photos.matching("test_*")
    assert len(test) == 500 and test.names[:2] == ["test_1.png", "test_2.png"]
    with pytest.raises(DataFormatError, match=r"no photo name matches 'test_1\?' \(names are file names such as "
                                              r"extra_1.png\)"):
        photos.matching("test_1?")
    i = photos.names.index("train_1.png")
    assert photos.labels[i] == "".join(str(d) for d in photos.boxes[i][:, 4])
    image = photos.image(i)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_labels_json_errors(tmp_path, svhn_dir):
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": {"label": "12", "boxes": [[0, 0, 5, 5, 1]]}}))
    with pytest.raises(DataFormatError, match="does not match its boxes"):
        load_labels_json(tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": {"label": "", "boxes": []}}))
    with pytest.raises(DataFormatError, match="entry 'a.png' has no digit boxes; every photo needs its number's"):
        load_labels_json(tmp_path / "labels.json")
    for box, message in (([0, 0, 5, 5, 10], r"box digits must be whole numbers 0..9, found 10"),
                         ([0, 0, 5, 5, 1.5], "box digits .* found 1.5"),
                         ([float("nan"), 0, 5, 5, 1], "box values must be finite numbers"),
                         ([0, 0, 1e10, 5, 1], "box values must lie within ±60,000 pixels, found 1e\\+10"),
                         ([0, 0, -5, 5, 1], "every box needs a width and height above 0")):
        (tmp_path / "labels.json").write_text(json.dumps({"a.png": {"label": "1", "boxes": [box]}}))
        with pytest.raises(DataFormatError, match=f"entry 'a.png': {message}"):
            load_labels_json(tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": {"label": "1", "boxes": [[0, 0, 5, 5, 1]]}}))
    with pytest.raises(DataFormatError, match="'a.png' not found"):
        load_labels_json(tmp_path / "labels.json")
    with pytest.raises(DataFormatError, match="unknown photo data"):
        load_numbers(str(tmp_path / "nowhere"))


def test_training_refuses_a_number_wholly_outside_its_photo(tmp_path):
    from housenum.train_reader import real_tensors

    image = np.zeros((40, 60, 3), np.uint8)

    def photo(box):
        return numbers.NumberSet(name="t", files=[], labels=["1"], boxes=[np.array([box])], images=[image])

    assert real_tensors(photo([50, 30, 20, 20, 1])).length.tolist() == [1]   # sticking out, as official boxes may
    outside = r"0: its digit boxes \(70, 5\) to \(80, 25\) lie outside the photo \(60x40\)"
    with pytest.raises(DataFormatError, match=outside):
        real_tensors(photo([70, 5, 10, 20, 1]))


def test_a_reader_run_whose_split_leaves_no_validation_photo_is_refused(tmp_path):
    from housenum.errors import ModelError
    from housenum.train_reader import ReaderTrainConfig, split_photos, train_reader

    image = np.zeros((40, 60, 3), np.uint8)
    photos = numbers.NumberSet(name="t", files=[Path(f"p{i}.png") for i in range(20)], labels=["1"] * 20,
                               boxes=[np.array([[20, 5, 10, 20, 1]])] * 20, images=[image] * 20)
    cfg = ReaderTrainConfig(data="t", holdout=None, epochs=1, synthetic=0, synthetic_empty=0, device="cpu")
    train_only = split_photos(photos, cfg)[0]   # the photos the name hash puts on the training side
    with pytest.raises(ModelError, match=f"--val-fraction 0.1 leaves no validation photos of the {len(train_only)}"):
        train_reader(cfg, tmp_path / "run", photos=train_only, progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_describe_numbers_counts_lengths_digits_and_how_much_the_number_fills(svhn_dir, tmp_path):
    from PIL import Image

    photos = load_numbers(str(svhn_dir / "numbers")).matching("train_1??.png")
    info = numbers.describe_numbers(photos)
    assert info["photos"] == 100 and sum(info["by_length"].values()) == 100
    assert sum(info["per_digit"]) == sum(len(b) for b in photos.boxes)
    assert info["per_digit"][1] == sum(label.count("1") for label in photos.labels)
    first = Image.open(photos.files[0])
    assert info["width"]["min"] <= first.width <= info["width"]["max"]
    assert 0 < info["number_width_share"]["p5"] <= info["number_width_share"]["median"] < 1
    synthetic = numbers.describe_numbers(load_numbers("synthetic:6"))   # photos in memory, no files
    assert synthetic["photos"] == 6 and synthetic["width"]["min"] > 0
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": {"label": "1", "boxes": [[0, 0, 5, 5, 1]]}}))
    with pytest.raises(DataFormatError, match="a.png: not a readable image"):
        numbers.describe_numbers(load_numbers(str(tmp_path)))
    Image.new("RGB", (100, 50)).save(tmp_path / "b.png")   # box sizes go unchecked in digitStruct.mat tables
    write_digit_struct(tmp_path / "digitStruct.mat", [("b.png", [[10, 5, -8, 20, 1]]), ("b.png", [[10, 5, 20, 20, 2]])])
    shares = numbers.describe_numbers(load_digit_struct(tmp_path / "digitStruct.mat"))["number_width_share"]
    assert shares["p5"] == shares["median"] == 0.2   # the box of no size is left out, not a -8% share


# --- svhn-full against a loopback server ----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {}
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_svhn_full_downloads_and_extracts(server, tmp_path, monkeypatch, svhn_dir, real_entries):
    struct_path = tmp_path / "digitStruct.mat"
    write_digit_struct(struct_path, [(f"{i + 1}.png", b) for i, (_, _, b) in enumerate(real_entries)])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, (file, _, _) in enumerate(real_entries):
            _add(tar, f"test/{i + 1}.png", (svhn_dir / "numbers" / "images" / file).read_bytes())
        _add(tar, "test/digitStruct.mat", struct_path.read_bytes())
        _add(tar, "test/see_bboxes.m", b"% MATLAB script")
        _add(tar, "../escape.png", b"outside")                       # never written outside
        _add(tar, "test/link.png", b"", tarfile.SYMTYPE, "/etc/passwd")  # links are skipped
    server.files["test.tar.gz"] = buffer.getvalue()
    monkeypatch.setenv("HOUSENUM_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HOUSENUM_DATA", str(tmp_path / "cache"))

    photos = load_numbers("svhn-full:test")
    assert photos.labels == [label for _, label, _ in real_entries]
    assert photos.image(0).shape[2] == 3
    folder = tmp_path / "cache" / "svhn-full" / "test"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{i + 1}.png" for i in range(len(real_entries))] + ["digitStruct.mat"])
    assert not (tmp_path / "cache" / "escape.png").exists() and not (tmp_path / "escape.png").exists()
    server.files.clear()  # a second load reads the cache only
    assert load_numbers("svhn-full", default_split="test").labels == photos.labels


def test_svhn_full_rejects_unknown_split_and_bad_archive(server, tmp_path, monkeypatch):
    with pytest.raises(DataFormatError, match="unknown svhn-full split"):
        load_numbers("svhn-full:validation")
    server.files["train.tar.gz"] = b"not a tar at all"
    monkeypatch.setenv("HOUSENUM_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HOUSENUM_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataFormatError, match="not a readable tar.gz.*deleted it, so the next run downloads it"):
        load_numbers("svhn-full:train")
    assert not (tmp_path / "cache" / "train.tar.gz").exists()   # no size or md5 to catch it before


def test_svhn_full_keeps_a_good_archive_when_the_disk_fails(server, tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, "train/1.png", b"png bytes")
    server.files["train.tar.gz"] = buffer.getvalue()
    monkeypatch.setenv("HOUSENUM_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HOUSENUM_DATA", str(tmp_path / "cache"))

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    with pytest.raises(HousenumError, match="could not extract .*No space left") as caught:
        load_numbers("svhn-full:train")
    assert not isinstance(caught.value, DataFormatError)
    assert (tmp_path / "cache" / "train.tar.gz").stat().st_size == len(buffer.getvalue())
    assert not (tmp_path / "cache" / "svhn-full" / ".train.partial").exists()


def test_a_dataset_photo_over_the_upload_limit_still_loads(tmp_path):
    from PIL import Image

    from housenum.preprocess import MAX_IMAGE_BYTES

    (tmp_path / "images").mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (1900, 2000, 3), dtype=np.uint8)   # PNG cannot shrink it
    Image.fromarray(noise).save(tmp_path / "images" / "big.png")
    assert (tmp_path / "images" / "big.png").stat().st_size > MAX_IMAGE_BYTES
    (tmp_path / "labels.json").write_text(json.dumps({"big.png": {"label": "1", "boxes": [[10, 10, 50, 80, 1]]}}))
    assert load_numbers(str(tmp_path)).image(0).shape == (1900, 2000, 3)

"""Opening user images (`housenum.preprocess.open_image`) and the Python prediction API's argument checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from housenum.errors import ArgumentError, ImageError, ImageTooLargeError, ModelError
from housenum.preprocess import open_image


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(svhn_dir) -> Image.Image:
    """A real street photo, wider than tall."""
    return Image.open(svhn_dir / "numbers" / "images" / "test_2.png").convert("RGB")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM"])
def test_every_cut_of_a_file_is_an_image_error(photo, fmt):
    """A file cut anywhere, header included, is refused as corrupt: Pillow raises half a dozen
    exception types for these, and each must become the one ImageError (HTTP 400, a CLI line)."""
    data = encoded(photo, fmt)
    cuts = sorted({*range(1, 64), *np.linspace(64, len(data) - 1, 24).astype(int)})
    for cut in cuts:
        try:
            open_image(data[:cut])
        except ImageError:
            continue
        # Some cuts still decode (a JPEG or GIF missing only its tail); they must then give a whole RGB image
        img = open_image(data[:cut])
        assert img.mode == "RGB" and img.size == photo.size, (fmt, cut)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF"])
def test_a_file_cut_in_its_header_is_named_by_its_format_not_called_not_an_image(photo, fmt):
    with pytest.raises(ImageError, match=f"a {fmt} file, corrupt or truncated in its header"):
        open_image(encoded(photo, fmt)[:4])
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"House numbers, in words rather than pixels")


def test_only_the_listed_formats_are_decoded_so_postscript_never_reaches_ghostscript(photo):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match=r"not an image \(expected PNG, JPEG, WebP, GIF, BMP, TIFF or PPM\)"):
        open_image(eps)
    with pytest.raises(ImageError, match="not an image"):
        open_image(encoded(photo, "TGA"))   # a real image, but not a format the service means to take


def test_exif_orientation_is_applied(photo):
    """Phone photos store pixels sideways with an orientation tag; they are read as meant to be seen."""
    sideways = photo.transpose(Image.Transpose.ROTATE_90)   # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6                                         # "rotate 90 clockwise to view"
    upright = open_image(encoded(sideways, "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.size == photo.size
    diff = np.abs(np.asarray(upright, np.int16) - np.asarray(photo, np.int16)).mean()
    assert diff < 8, diff                                    # JPEG noise only


def test_float_arrays_in_0_1_or_0_255_give_the_same_image(crops):
    digit = crops["X"][0]
    as_uint8 = np.asarray(open_image(digit))
    assert np.array_equal(np.asarray(open_image(digit / 255.0)), as_uint8)
    assert np.array_equal(np.asarray(open_image(digit.astype(np.float32))), as_uint8)
    assert np.array_equal(np.asarray(open_image(digit.astype(np.int64))), as_uint8)


@pytest.mark.parametrize("array, message", [
    (np.full((32, 32, 3), np.nan), "NaN"),
    (np.full((32, 32, 3), 300.0), "0..255"),
    (np.full((32, 32), -1, np.int16), "0..255"),
    (np.zeros((32, 32, 3), bool), "numbers"),
    (np.zeros((4, 32, 32, 3), np.uint8), "must be (H, W)"),
])
def test_bad_arrays_are_image_errors(array, message):
    with pytest.raises(ImageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_image(array)


def test_open_files_are_read_and_other_objects_refused(svhn_dir):
    path = svhn_dir / "numbers" / "images" / "test_2.png"
    with open(path, "rb") as fh:
        assert open_image(fh).size == open_image(path).size
    data = path.read_bytes()
    for source in (data, io.BytesIO(data)):                     # bytes and open files alike keep the byte limit
        with pytest.raises(ImageTooLargeError, match="too large"):
            open_image(source, max_bytes=len(data) - 1)
    for bad in (None, 42, ["a.png"]):
        with pytest.raises(ImageError, match="cannot read an image from a"):
            open_image(bad)


def test_a_float_tiff_out_of_range_is_refused_by_its_file_name():
    for value, said in ((1000.0, "values must be 0..255 .*got 1000..1000"), (np.nan, "NaN or infinite")):
        data = encoded(Image.fromarray(np.full((20, 20), value, np.float32), "F"), "TIFF")
        with pytest.raises(ImageError, match=f"^plate.tif: its 32-bit float pixels: .*{said}"):
            open_image(data, name="plate.tif")


def test_an_empty_or_few_pixel_image_is_refused_rather_than_read_as_a_digit():
    from housenum.export import load_digit_recognizer

    fast = load_digit_recognizer("fast")
    with pytest.raises(ImageError, match=r"empty \(0x0 pixels\)"):
        fast.predict([Image.new("RGB", (0, 0))])
    for size in ((1, 1), (1, 5000), (5, 5)):
        with pytest.raises(ImageError, match=f"{size[0]}x{size[1]} pixels is too small to hold a digit"):
            fast.predict([Image.new("RGB", size)])
    assert len(fast.predict([Image.new("RGB", (3, 11))])) == 1   # as narrow as SVHN's thinnest "1" boxes


def test_prediction_api_checks_its_arguments(crops):
    from housenum.export import load_digit_recognizer

    fast = load_digit_recognizer("fast")
    X, y = crops["X"][:8], crops["y"][:8]
    as_list = [p.digit for p in fast.predict(list(X))]
    assert [p.digit for p in fast.predict(X)] == as_list     # an (N, H, W, C) array is a batch
    assert [p.digit for p in fast.predict(list(X / 255.0))] == as_list
    assert np.mean(np.equal(as_list, y)) >= 0.75
    with pytest.raises(ImageError, match="wrap a single one in a list"):
        fast.predict("digit.png")
    with pytest.raises(ArgumentError, match="top_k must be an integer 1..10"):
        fast.predict(list(X), top_k=0)
    with pytest.raises(ModelError, match="a digit model is given as a run folder, a .pt file or a shipped name"):
        load_digit_recognizer(5)
    with pytest.raises(ImageError, match=r"\(N, 32, 32, 3\)"):
        fast.predict_arrays(X[:, :16])
    with pytest.raises(ImageError, match="uint8"):
        fast.predict_arrays(X.astype(np.float32))
    for bad in (0, 11, -1):
        with pytest.raises(ValueError, match="top_k"):
            fast.predict(list(X), top_k=bad)


def test_a_strip_too_long_for_a_photo_is_refused_from_its_header():
    """1 x 39,000,000 pixels passes the pixel limit, but Pillow would spend 1.9 GB decoding it."""
    from tests.test_read import _png_header

    with pytest.raises(ImageTooLargeError, match=r"too long \(1x39000000 pixels; no side may pass 30000\)"):
        open_image(_png_header(1, 39_000_000))
    with pytest.raises(ImageTooLargeError, match=r"header declares 3600000000 pixels; limit 40000000"):
        open_image(_png_header(60_000, 60_000))    # past Pillow's own limit, which it refuses first
    wide = io.BytesIO()
    Image.new("RGB", (16_000, 2)).save(wide, "PNG")
    assert open_image(wide.getvalue()).size == (16_000, 2)


def test_batch_calls_refuse_a_lone_image_and_name_a_bad_item(crops):
    from housenum.predict import DigitRecognizer

    recognizer = DigitRecognizer("fast")
    one = crops["X"][0]
    grey = crops["X"][0, :, :, :1]                      # (32, 32, 1): one greyscale digit, not 32 rows
    for lone in (one, grey, b"\x89PNG", bytearray(b"x"), io.BytesIO(b"x"), Image.fromarray(one), "a.png"):
        with pytest.raises(ImageError, match=r"wrap a single one in a list: predict\(\[image\]\)"):
            recognizer.predict(lone)
    three = list(crops["X"][:3])
    assert recognizer.predict(x for x in three) == recognizer.predict(three)
    with pytest.raises(ImageError, match=r"^item 1 of 3: image bytes: not an image"):
        recognizer.predict([three[0], b"junk", three[1]])
    with pytest.raises(ValueError, match="top_k must be an integer"):
        recognizer.predict(three, top_k=True)
    mirrored = crops["X"][:4, :, ::-1]                  # a view with a negative stride
    assert recognizer.predict_arrays(mirrored) == recognizer.predict_arrays(mirrored.copy())


def test_sixteen_bit_pixels_read_as_their_eight_bit_copy():
    grey8 = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
    grey16 = grey8.astype(np.uint16) * 257
    image16 = Image.fromarray(grey16)
    assert image16.mode.startswith("I;16")
    for source in (image16, grey16):
        assert np.array_equal(np.asarray(open_image(source))[..., 0], grey8)
    uniform = Image.fromarray(np.full((8, 8), 40_000, np.uint16))   # was stretched to black
    assert np.asarray(open_image(uniform)).max() == round(40_000 / 257)


def test_a_file_opened_in_text_mode_is_named(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    for errors in ("strict", "ignore"):      # PNG bytes fail to decode, or decode to a string
        with open(path, errors=errors) as text, pytest.raises(ImageError, match="opened in text mode"):
            open_image(text)


def test_a_float_image_in_0_1_reads_as_the_same_array_does(crops, tmp_path):
    grey = crops["X"][0].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    path = tmp_path / "unit.tiff"
    Image.fromarray(grey / 255).save(path)             # mode F, pixels 0..1: was read as black
    assert Image.open(path).mode == "F"
    assert np.abs(np.asarray(open_image(path)).astype(int) - np.asarray(open_image(grey / 255))).max() == 0
    assert np.abs(np.asarray(open_image(path))[..., 0] - np.rint(grey)).max() <= 1   # not black


def test_a_pipe_is_held_to_the_byte_limit_and_an_unreadable_file_named(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)                                     # a pipe reports size 0: it was read without bound
    writer = threading.Thread(target=lambda: fifo.write_bytes(b"\0" * 5000), daemon=True)
    writer.start()
    with pytest.raises(ImageTooLargeError, match="pipe.png: image is too large .*limit 1000"):
        open_image(fifo, max_bytes=1000)
    writer.join(5)
    with pytest.raises(ImageError, match=r"^/proc/self/mem: cannot be read \(Input/output error\)"):
        open_image("/proc/self/mem")


def test_a_folder_of_photos_includes_every_format_read(tmp_path):
    from housenum.preprocess import images_in

    for name in ("a.tiff", "b.png", "c.TIF", "d.ppm", "e.PGM", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in images_in(tmp_path)] == ["a.tiff", "b.png", "c.TIF", "d.ppm", "e.PGM"]

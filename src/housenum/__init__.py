"""housenum: read house numbers from street photos, built on SVHN."""

from housenum.errors import (ArgumentError, DataFormatError, DownloadError, HousenumError, ImageError,
                             ImageTooLargeError, ModelError)

__version__ = "1.0.0"

__all__ = ["ArgumentError", "DataFormatError", "DownloadError", "HousenumError", "ImageError", "ImageTooLargeError",
           "ModelError", "__version__", "read_number"]


def __getattr__(name: str):
    """`housenum.read_number` without importing torch until it is used."""
    if name == "read_number":
        from housenum.read import read_number

        return read_number
    raise AttributeError(f"module 'housenum' has no attribute '{name}'")


def __dir__() -> list[str]:   # tab completion shows read_number, which loads lazily
    return sorted({*globals(), *__all__})

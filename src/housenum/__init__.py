"""housenum: read house numbers from street photos, built on SVHN."""

from housenum.errors import DataFormatError, HousenumError, ImageError, ModelError

__version__ = "1.0.0"

__all__ = ["DataFormatError", "HousenumError", "ImageError", "ModelError", "__version__", "read_number"]


def __getattr__(name: str):
    """`housenum.read_number` without importing torch until it is used."""
    if name == "read_number":
        from housenum.read import read_number

        return read_number
    raise AttributeError(f"module 'housenum' has no attribute '{name}'")

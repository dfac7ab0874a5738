"""housenum: read house numbers from street photos, built on SVHN."""

from housenum.errors import DataFormatError, HousenumError, ImageError, ModelError

__version__ = "1.0.0"

__all__ = ["DataFormatError", "HousenumError", "ImageError", "ModelError", "__version__"]

"""One exception type per kind of user mistake; the CLI and HTTP layer turn them into messages."""


class HousenumError(Exception):
    """Base class: a problem the user can fix, reported as one clear line."""


class DataFormatError(HousenumError):
    """A data file or spec is missing, corrupt, or not in the expected layout."""


class ImageError(HousenumError):
    """An image cannot be read: not an image, truncated, empty, or too large."""


class ImageTooLargeError(ImageError):
    """An image over the byte or pixel limit (HTTP 413 rather than 400)."""


class ModelError(HousenumError):
    """A model name, run folder or checkpoint is unknown or unusable."""


class ArgumentError(HousenumError, ValueError):
    """A Python call's argument of the wrong type or out of range (a ValueError too, as before)."""


class DownloadError(HousenumError):
    """A download failed or its file did not match the expected size or checksum."""


def brief(error: BaseException, limit: int = 200) -> str:
    """A library's message as one short line: PyTorch's can list every mismatched tensor."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def is_whole(value) -> bool:
    """An int (numpy's too), not a bool or a float that happens to be whole."""
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_whole(name: str, value, minimum: int = 1) -> None:
    """A Python call's `value` must be a whole number of at least `minimum`."""
    if not is_whole(value) or value < minimum:
        raise ArgumentError(f"{name} must be a whole number {minimum} or more, got {value!r}")

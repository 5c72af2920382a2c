"""Exceptions that carry a message meant for the user (CLI ``error:`` line, napari notification)."""


class EmUnetError(Exception):
    """A problem with the user's input or files, explained in one sentence."""


class InputError(EmUnetError):
    """An image, labels stack or parameter that cannot be used."""


class ModelFileError(EmUnetError):
    """A model file that is missing, damaged, unsafe or incompatible."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type), for one-line reports."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else exc.__class__.__name__)[:limit]

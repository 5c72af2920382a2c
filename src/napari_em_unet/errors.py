"""Exceptions that carry a message meant for the user (CLI ``error:`` line, napari notification)."""


class EmUnetError(Exception):
    """A problem with the user's input or files, explained in one sentence."""


class InputError(EmUnetError):
    """An image, labels stack or parameter that cannot be used."""


class ModelFileError(EmUnetError):
    """A model file that is missing, damaged, unsafe or incompatible."""

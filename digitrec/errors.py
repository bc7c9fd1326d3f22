"""Errors a user can cause and fix. Each message says what happened and what to do.

The app and the command line catch `DigitrecError` and show its message as one
sentence instead of a traceback.
"""


class DigitrecError(Exception):
    """Base class: a problem with the user's input or setup, not a bug."""


class DataUnavailable(DigitrecError):
    """MNIST was not found locally and could not be fetched."""


class TrainingDiverged(DigitrecError):
    """The loss became NaN or infinite; the model kept its last finite weights."""


class CheckpointError(DigitrecError):
    """A checkpoint file is not one this version of digitrec can load."""


class EmptyDrawing(DigitrecError):
    """A drawing or image has no ink to read as a digit."""


class BadImage(DigitrecError):
    """An uploaded file is not an image we can read."""


class InvalidConfig(DigitrecError):
    """A model or training setting is out of its allowed range."""


class ModelImportError(DigitrecError):
    """A learner's saved model (state dict) cannot be imported; the message says why and what to do."""

"""The FeatxError family: user-facing failures that the CLI prints as one line.

Anything that is not a FeatxError is a bug in featx and keeps its traceback.
"""


class FeatxError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class DataError(FeatxError):
    """A dataset, manifest or image cannot be used as given."""


class ImageError(DataError):
    """One image cannot be decoded; carries the path and the reason separately."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BackboneError(FeatxError):
    """An unknown backbone, missing weights, or weights that do not fit."""


class StoreError(FeatxError):
    """A feature store that is missing, locked, corrupt or made with other settings."""


class ConfigError(FeatxError):
    """A config file or option value that is invalid."""

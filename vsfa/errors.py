"""One exception family. The CLI prints ``error: <message>`` on one line and exits with code 2."""

from __future__ import annotations


class VsfaError(Exception):
    """A user-facing error: bad input, missing file, mismatched artifact. Message names the file/field."""

    exit_code = 2


class ConfigError(VsfaError):
    """A config file or field is invalid."""


class ModelLoadError(VsfaError):
    """A model, adapter, tokenizer or processor cannot be loaded."""


class ArtifactError(VsfaError):
    """An artifact on disk is missing, incomplete (no manifest) or does not match what is expected."""


class DataError(VsfaError):
    """A data file, image or record is missing, corrupt or invalid."""

"""Exceptions that carry the file or row at fault and the fix."""


class SkinDualGenError(Exception):
    """Base class: every message names what is wrong, where, and how to fix it."""


class DataError(SkinDualGenError):
    """Bad input data (manifest rows, image or mask files, importer layouts)."""


class ConfigError(SkinDualGenError):
    """A params.yaml section or an override that does not fit its typed config."""


class ModelError(SkinDualGenError):
    """A model folder, checkpoint or architecture that cannot be used as asked."""

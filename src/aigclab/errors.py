"""Errors a user can cause. The CLI prints these as one clear line instead of a traceback."""

from __future__ import annotations


class AigclabError(Exception):
    """Base class for errors caused by user input (bad files, unknown names, bad configs)."""


class ImageError(AigclabError):
    """An image could not be loaded. The message names the source and the cause."""

    def __init__(self, source: str, cause: str):
        self.source = source
        self.cause = cause
        super().__init__(f"{source}: {cause}")


class UnknownNameError(AigclabError, KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class ConfigError(AigclabError):
    """A config or preset file is missing or invalid."""


class DataError(AigclabError):
    """A dataset folder, manifest or record file is malformed; the message names file and line."""

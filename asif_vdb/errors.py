"""Errors a user can act on. Each names the offending input and what was expected."""

from __future__ import annotations


class AsifError(Exception):
    """Base class: every expected failure of asif-vdb (the CLI prints these without a traceback)."""


class InputError(AsifError, ValueError):
    """A bad image, caption, vector or argument given by the caller."""


class EncoderMismatchError(AsifError):
    """A store was opened with encoders other than the ones its vectors were made with."""


class StoreError(AsifError):
    """The store is missing, corrupt, or asked for something it does not hold."""


class StoreBusyError(StoreError):
    """The embedded store is open in another process (its lock file names the holder)."""


class ReadOnlyStoreError(StoreError):
    """A change was asked of a store that can only be read (a read-only file system)."""


class NotFoundError(StoreError, KeyError):
    """A label set, gallery or anchor id that the store does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""

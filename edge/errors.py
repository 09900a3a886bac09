"""User-facing errors: one line that names the bad thing and how to fix it.

The CLI prints ``EdgeError`` without a traceback (unless ``--debug``) and exits non-zero.
Anything else escaping is a bug in edge and is shown in full.
"""

from __future__ import annotations


class EdgeError(Exception):
    """An error caused by the user's input or environment, with an optional fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NumericsError(EdgeError):
    """An artifact was written but disagrees with PyTorch beyond the gate."""

    exit_code = 3


class DeviceError(EdgeError):
    """A device or transport failed; measurements already taken are kept."""

    exit_code = 4

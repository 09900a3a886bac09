"""Ctrl-C that is never lost.

Python raises SIGINT's KeyboardInterrupt wherever the main thread happens to be. Inside a garbage-collector callback
or a ``__del__`` (jax registers one, and the converters collect garbage constantly) the exception is reported as
"unraisable" and dropped, and an export would go on to write its files. So the pipeline also records the signal
while it runs, and checks the record before it commits anything.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_seen = False


@contextlib.contextmanager
def recorded() -> Iterator[None]:
    """While inside (or in a function it decorates), a SIGINT is recorded, then handled as before (normally a
    KeyboardInterrupt).

    Only from the main thread, and only where SIGINT has a Python handler: an ignored or default SIGINT is left so.
    """
    global _seen
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        global _seen
        _seen = True
        previous(signum, frame)

    _seen = False
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise the KeyboardInterrupt that a SIGINT since ``recorded()`` began should have raised."""
    if _seen:
        raise KeyboardInterrupt

"""Stage progress: a live line on a TTY, plain lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False, tty: bool | None = None) -> None:
        """``tty=False`` forces plain lines (a second process writing to the same terminal)."""
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.times: dict[str, float] = {}

    def info(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        """Time a stage; the elapsed seconds land in ``self.times[name]``."""
        label = f"{name} {detail}".strip()
        if not self.quiet:
            if self.tty:
                print(f"\r\033[K… {label}", end="", file=self.stream, flush=True)
            else:
                print(f"[start] {label}", file=self.stream, flush=True)
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            dt = time.perf_counter() - t0
            self.times[name] = self.times.get(name, 0.0) + dt
            if not self.quiet:
                mark = "ok" if ok else "FAILED"
                prefix = "\r\033[K" if self.tty else ""
                print(f"{prefix}[{mark}] {label} ({dt:.1f}s)", file=self.stream, flush=True)

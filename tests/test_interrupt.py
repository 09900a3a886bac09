"""A Ctrl-C that lands where Python drops exceptions (a ``__del__``, a garbage-collector callback) is still seen."""

from __future__ import annotations

import os
import signal

import pytest

from edge import _interrupt as interrupt


class _SwallowsCtrlC:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs in here; its KeyboardInterrupt is "unraisable" and dropped
            pass


@pytest.fixture
def python_ctrl_c():
    """SIGINT handled by Python, as in a fresh interpreter (something earlier in a test session may ignore it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_swallowed_ctrl_c_is_raised_by_check(python_ctrl_c) -> None:
    with interrupt.recorded():
        _SwallowsCtrlC()  # collected at once, by reference counting
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nothing_recorded_without_a_signal(python_ctrl_c) -> None:
    with interrupt.recorded():
        interrupt.check()


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.recorded():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)

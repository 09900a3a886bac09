"""CLI error contract: one line and a non-zero exit, a traceback only with --debug."""

from __future__ import annotations

import subprocess
import sys

from edge.cli import main


def test_unknown_model_suggests_close_names(capsys):
    rc = main(["models", "ghostnet-1.1x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown model 'ghostnet-1.1x'" in err and "ghostnet-1.0x" in err
    assert "Traceback" not in err


def test_debug_shows_traceback():
    p = subprocess.run([sys.executable, "-m", "edge", "--debug", "models", "nonet"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" in p.stderr and "unknown model 'nonet'" in p.stderr
    p = subprocess.run([sys.executable, "-m", "edge", "models", "nonet"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2  # the error and its hint

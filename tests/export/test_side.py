"""The side process that converts TFLite beside ONNX and Core ML: which targets go there, and that results, errors
and Ctrl-C cross the process boundary intact. Every process here is a real ``python -m edge.export.side``."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.export import export
from edge.export.context import ExportOptions
from edge.export.side import SideExport, plan
from tests.export.nets import tiny

ZOO = "mobilenetv2-1.0"  # the quickest zoo network to convert
IMG = 64


@pytest.mark.parametrize(("model", "targets", "jobs", "shares", "here", "side"), [
    (ZOO, ["onnx", "tflite", "coreml"], 2, True, ["onnx", "coreml"], [["tflite"]]),
    (ZOO, ["onnx", "tflite", "coreml"], 8, True, ["onnx", "coreml"], [["tflite"]]),
    (ZOO, ["onnx", "tflite", "coreml"], 1, True, ["onnx", "tflite", "coreml"], []),
    (ZOO, ["tflite"], 4, True, ["tflite"], []),
    (ZOO, ["tflite", "coreml"], 2, True, ["coreml"], [["tflite"]]),
    # --channels-last: nothing shares a traced program, so every target could go its own way
    (ZOO, ["onnx", "tflite", "coreml"], 2, False, ["onnx", "coreml"], [["tflite"]]),
    (ZOO, ["onnx", "tflite", "coreml"], 3, False, ["onnx"], [["tflite"], ["coreml"]]),
    # a user's network need not rebuild identically in another process
    ("mynet.py:build", ["onnx", "tflite"], 2, True, ["onnx", "tflite"], []),
])
def test_plan(model, targets, jobs, shares, here, side) -> None:
    assert plan(model, targets, jobs, shares_program=shares) == (here, side)


def test_plan_keeps_a_module_in_this_process() -> None:
    assert plan(tiny(attention=False), ["onnx", "tflite"], 4, shares_program=True) == (["onnx", "tflite"], [])


@pytest.mark.slow
def test_tflite_converts_in_a_side_process(tmp_path, capfd) -> None:
    """This process's progress goes to a buffer; the side process writes plain lines to the shared stderr."""
    from edge._progress import Progress

    serial = export(ZOO, target="tflite,onnx", out=tmp_path / "serial", img_size=IMG, jobs=1,
                    progress=Progress(io.StringIO()))
    capfd.readouterr()
    mine = io.StringIO()
    both = export(ZOO, target="tflite,onnx", out=tmp_path / "both", img_size=IMG, jobs=2, progress=Progress(mine))
    child = capfd.readouterr().err
    assert f"[ok] convert {ZOO} tflite-fp32" in child and f"convert {ZOO} tflite-fp32" not in mine.getvalue()
    assert f"convert {ZOO} onnx-fp32" in mine.getvalue() and "onnx-fp32" not in child
    assert [r.target for r in both] == ["tflite", "onnx"] and all(r.passed for r in both)
    # the side process rebuilt the same weights: the same bytes as the one-process run
    for a, b in zip(serial, both):
        assert a.manifest["artifact"]["sha256"] == b.manifest["artifact"]["sha256"], a.target
    assert sorted(p.name for p in (tmp_path / "both" / ZOO).iterdir()) == ["onnx-fp32", "tflite-fp32"]


def _job(out: Path, **kw) -> dict:
    return {"model_or_name": ZOO, "precision": "fp32", "out": out, "checkpoint": None, "img_size": IMG, "name": None,
            "options": None, "export_options": ExportOptions(), "seed": 0, "verbose": False,
            "report_rejections": True, "quiet": True, **kw}


def test_an_error_in_the_side_process_reaches_the_caller_with_its_hint(tmp_path) -> None:
    import torch

    bad = tmp_path / "weights.pth"
    torch.save({"not_a_layer.weight": torch.zeros(3)}, bad)  # loads, but fits no layer of the network
    side = SideExport(["tflite"], _job(tmp_path / "out", checkpoint=bad), threads=1)
    with pytest.raises(EdgeError) as err:
        side.result()
    assert "weights.pth" in err.value.message and err.value.hint
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_stopping_the_side_process_mid_conversion_leaves_nothing(tmp_path) -> None:
    """Even from a parent that ignores SIGINT (as under nohup), which the side process inherits through exec."""
    out = tmp_path / "out"
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        side = SideExport(["tflite"], _job(out), threads=1)
    finally:
        signal.signal(signal.SIGINT, before)
    deadline = time.monotonic() + 120
    while not list(out.glob(f"{ZOO}/.tflite-fp32.*.tmp")):  # the pipeline's temporary export folder
        assert side.process.poll() is None and time.monotonic() < deadline, "the side export never started"
        time.sleep(0.2)
    side.stop()  # as the parent does on Ctrl-C: SIGINT, then wait
    assert side.process.returncode is not None
    assert [p.relative_to(out) for p in out.rglob("*")] == [Path(ZOO)]
    assert not side._dir.exists()


def test_a_side_process_that_dies_is_an_error_that_says_so(tmp_path) -> None:
    side = SideExport(["tflite"], _job(tmp_path / "out"), threads=1)
    side.process.kill()  # as a crash in a converter's native code would end it
    with pytest.raises(EdgeError, match=r"converting tflite ended without a result \(exit code -9\)") as err:
        side.result()
    assert "--jobs 1" in err.value.hint and not side._dir.exists()

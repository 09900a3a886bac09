"""Which integer modes exist per target, and the clear error (before any conversion) for one that does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import EdgeError
from edge.export.context import QUANT_PRECISIONS, TARGET_NAMES
from edge.export.quantize import FLAG_FOR, INT_PRECISIONS, MODES, WHY_NOT, check_mode, quantize, supported
from tests.export.quantize_nets import calibrated_tiny, make_ctx, shared_for


def test_modes_table_covers_every_target_and_says_why_for_each_gap() -> None:
    assert set(INT_PRECISIONS) == set(QUANT_PRECISIONS)
    assert set(MODES) == set(TARGET_NAMES)
    for target in TARGET_NAMES:
        for precision in INT_PRECISIONS:
            if supported(target, precision):
                assert len(MODES[target][precision]) > 40  # says how it is done
            else:
                assert (target, precision) in WHY_NOT, f"{target} {precision} is absent without a reason"
    # ONNX and TFLite have every mode; Core ML lacks W8A16 and dynamic range
    assert set(MODES["onnx"]) == set(MODES["tflite"]) == set(INT_PRECISIONS)
    assert set(MODES["coreml"]) == {"int8", "int8w"}


@pytest.mark.parametrize("precision", ["w8a16", "int8dyn"])
def test_unsupported_combination_is_a_clear_error(precision: str) -> None:
    with pytest.raises(EdgeError) as e:
        check_mode("coreml", precision)
    msg = str(e.value)
    assert FLAG_FOR[precision] in msg and "coreml" in msg
    assert WHY_NOT[("coreml", precision)].split(",")[0] in msg
    assert "--target onnx or tflite" in msg  # says where the mode does exist


def test_dispatcher_refuses_before_touching_the_network(tmp_path: Path) -> None:
    net = calibrated_tiny()
    ctx = make_ctx(net, "coreml", "w8a16", tmp_path / "w", shared_for(net))
    with pytest.raises(EdgeError, match="does not support --int16-activations"):
        quantize(ctx)
    assert not any((tmp_path / "w").iterdir())


def test_cli_unsupported_mode_exits_nonzero_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["export", "ghostnet-0.5x", "--target", "coreml", "--int16-activations", "--out", str(out)])
    assert rc != 0
    err = capsys.readouterr().err
    assert "coreml does not support --int16-activations" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*"))

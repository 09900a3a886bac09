"""`edge export` / `edge verify` from the command line: flags, output, and re-verification of an export."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

import edge.export
from edge.cli import build_parser, main
from edge.cli.export import parse_options, precision_of, read_labels
from edge.errors import EdgeError
from tests.export.nets import tiny

IMG = 32
ROOT = Path(__file__).resolve().parents[2]


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["export", "m", *argv])


@pytest.mark.parametrize(("flags", "precision"), [
    ([], "fp32"),
    (["--fp16"], "fp16"),
    (["--int8"], "int8"),
    (["--int8-weights"], "int8w"),
    (["--int16-activations"], "w8a16"),
    (["--int8", "--int16-activations"], "w8a16"),
    (["--int8-dynamic"], "int8dyn"),
    (["--precision", "int8w"], "int8w"),
    (["--precision", "fp16", "--fp16"], "fp16"),
])
def test_precision_flags(flags: list[str], precision: str) -> None:
    assert precision_of(_args(flags)) == precision


@pytest.mark.parametrize("flags", [["--fp16", "--int8"], ["--int8", "--int8-weights"],
                                   ["--precision", "fp32", "--fp16"]])
def test_conflicting_precision_flags(flags: list[str]) -> None:
    with pytest.raises(EdgeError):
        precision_of(_args(flags))


def test_options_and_labels(tmp_path) -> None:
    assert parse_options(["width=1.3", "name=abc", "flag=true"]) == {"width": 1.3, "name": "abc", "flag": True}
    with pytest.raises(EdgeError, match="KEY=VALUE"):
        parse_options(["width"])
    f = tmp_path / "labels.txt"
    f.write_text("cat\n\ndog\n")
    assert read_labels(str(f)) == ["cat", "dog"]
    with pytest.raises(EdgeError, match="cannot be read"):
        read_labels(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(EdgeError, match="no labels"):
        read_labels(str(tmp_path / "empty.txt"))


def test_every_flag_reaches_the_python_api(monkeypatch, tmp_path) -> None:
    seen = {}

    def fake_export(model, **kw):
        seen.update(kw, model=model)
        return []

    monkeypatch.setattr(edge.export, "export", fake_export)
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\n")
    rc = main(["export", "ghostnet-1.0x", "--target", "tflite", "--int8", "--checkpoint", "w.pth", "--img-size", "160",
               "--out", str(tmp_path), "--opset", "19", "--channels-last", "--image-input", "--class-labels",
               str(labels), "--option", "width=1.3", "--calib", "imgs", "--calib-samples", "64", "--calib-method",
               "percentile", "--keep-float", "blocks.0", "head", "--auto-mixed", "3", "--float-io", "--engine", "pt2e",
               "--eval", "ev"])
    assert rc == 0
    q = seen["quant"]
    assert (seen["model"], seen["target"], seen["precision"], seen["checkpoint"], seen["img_size"]) == (
        "ghostnet-1.0x", "tflite", "int8", "w.pth", 160)
    assert (seen["opset"], seen["channels_last"], seen["image_input"], seen["class_labels"]) == (19, True, True,
                                                                                                  ["a", "b"])
    assert seen["options"] == {"width": 1.3}
    assert (q.calib_dir, q.calib_samples, q.calib_method, q.keep_float, q.auto_mixed, q.float_io, q.engine,
            q.eval_dir) == (Path("imgs"), 64, "percentile", ("blocks.0", "head"), 3, True, "pt2e", Path("ev"))


def test_help_lists_the_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--target", "--fp16", "--int8", "--int8-weights", "--int16-activations", "--checkpoint",
                 "--img-size", "--out", "--opset", "--channels-last", "--image-input", "--class-labels", "--json",
                 "--calib", "--calib-samples", "--calib-method", "--keep-float", "--auto-mixed", "--float-io",
                 "--engine", "--eval"):
        assert flag in text, flag


# ------------------------------------------------------------------------------ end to end, then verify


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    factory = root / "mynet.py"
    factory.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.export.nets import tiny\n"
                       "def build():\n    return tiny(attention=False, seed=1)\n")
    ck = root / "weights.pth"
    torch.save(tiny(attention=False, seed=2).state_dict(), ck)
    out = root / "out"
    import contextlib
    import io

    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = main(["export", f"{factory}:build", "--target", "onnx,coreml", "--img-size", str(IMG), "--out", str(out),
                   "--checkpoint", str(ck), "--json"])
    return {"rc": rc, "stdout": so.getvalue(), "stderr": se.getvalue(), "out": out, "ck": ck}


def test_cli_export_json_and_progress(cli_export) -> None:
    assert cli_export["rc"] == 0, cli_export["stderr"]
    results = json.loads(cli_export["stdout"])
    assert [r["manifest"]["target"] for r in results] == ["onnx", "coreml"]
    for r in results:
        m = r["manifest"]
        assert r["passed"] and m["model"] == "build" and m["source"]["kind"] == "file"
        assert m["checkpoint"]["sha256"] and Path(r["path"]).parent == cli_export["out"] / "build"
        assert m["activations"] == "checkpoint weights.pth"
    assert "[start] convert build onnx-fp32" in cli_export["stderr"]
    assert "[ok] verify build coreml-fp32" in cli_export["stderr"]


def test_verify_passes_on_an_untouched_export(cli_export, capsys) -> None:
    rc = main(["verify", str(cli_export["out"] / "build")])
    out = capsys.readouterr().out
    assert rc == 0 and out.count(": ok (") == 2 and "sha256 matches" in out


def test_verify_detects_a_changed_artifact(cli_export, capsys, tmp_path) -> None:
    for target, victim in (("onnx", "model.onnx"), ("coreml", "model.mlpackage/Manifest.json")):
        d = tmp_path / target
        shutil.copytree(cli_export["out"] / "build" / f"{target}-fp32", d)
        f = d / victim
        f.write_bytes(f.read_bytes() + b" ")
        rc = main(["verify", str(d)])
        err = capsys.readouterr().err
        assert rc == 2 and "was changed after export: sha256" in err, err


def test_verify_detects_a_changed_checkpoint(cli_export, capsys) -> None:
    ck = cli_export["ck"]
    saved = ck.read_bytes()
    try:
        torch.save(tiny(attention=False, seed=3).state_dict(), ck)
        rc = main(["verify", str(cli_export["out"] / "build" / "onnx-fp32")])
        assert rc == 2 and "changed since the export" in capsys.readouterr().err
    finally:
        ck.write_bytes(saved)


def test_verify_of_a_folder_without_manifest(tmp_path, capsys) -> None:
    rc = main(["verify", str(tmp_path)])
    assert rc == 2 and "has no manifest.json" in capsys.readouterr().err

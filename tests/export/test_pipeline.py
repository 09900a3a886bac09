"""The pipeline's guarantees: nothing half-written, a hard numerics gate, clear errors for bad input.

Where a failure has to be provoked inside a converter (Ctrl-C, a crash, a wrong graph), the adapter's
``convert`` is patched on the live target object; everything around it (reference, verify, write) is real.
"""

from __future__ import annotations

import copy
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from edge.cli import main
from edge.errors import EdgeError, NumericsError
from edge.export import QuantOptions, export, verify
from edge.export.targets import TARGETS, ConversionError
from tests.export.nets import tiny

IMG = 32


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


def _factory_file(tmp_path: Path, body: str | None = None) -> Path:
    f = tmp_path / "mynet.py"
    f.write_text(body or (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from tests.export.nets import tiny\n"
        "def build():\n    return tiny(attention=False)\n"
        "def not_a_net():\n    return 42\n"
        "def broken():\n    raise ValueError('no weights here')\n"
        "NUMBER = 3\n"
    ))
    return f


# ---------------------------------------------------------------------------------- atomic output, Ctrl-C


def test_ctrl_c_during_conversion_leaves_nothing(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    previous = out / "tinynet" / "tflite-fp32"
    previous.mkdir(parents=True)
    (previous / "manifest.json").write_text('{"old": true}')

    def interrupted(ctx):
        (ctx.workdir / "model.tflite").write_bytes(b"half a flatbuffer")
        raise KeyboardInterrupt

    monkeypatch.setattr(TARGETS["tflite"], "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(tiny(attention=False), target="tflite", out=out, img_size=IMG)
    # the earlier export is untouched and no temporary folder or partial file remains
    assert sorted(str(p.relative_to(out)) for p in _files(out)) == [
        "tinynet", "tinynet/tflite-fp32", "tinynet/tflite-fp32/manifest.json"]
    assert json.loads((previous / "manifest.json").read_text()) == {"old": True}


def test_ctrl_c_through_the_cli_exits_130_and_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    factory = _factory_file(tmp_path)
    out = tmp_path / "out"

    def interrupted(ctx):
        (ctx.workdir / "model.tflite").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(TARGETS["tflite"], "convert", interrupted)
    rc = main(["export", f"{factory}:build", "--target", "tflite", "--img-size", str(IMG), "--out", str(out)])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    assert _files(out) == []


def test_converter_crash_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch) -> None:
    def crash(ctx):
        (ctx.workdir / "model.tflite").write_bytes(b"partial")
        raise RuntimeError("segment of converter state went missing")

    monkeypatch.setattr(TARGETS["tflite"], "convert", crash)
    with pytest.raises(ConversionError, match=r"tflite conversion of tinynet failed: RuntimeError: segment") as ei:
        export(tiny(attention=False), target="tflite", out=tmp_path / "out", img_size=IMG)
    assert "--debug" in ei.value.hint
    assert _files(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------- numerics gate


@pytest.fixture(scope="module")
def broken_export(tmp_path_factory):
    """An ONNX export whose converted graph differs from the network (a perturbed classifier bias)."""
    out = tmp_path_factory.mktemp("broken")
    target = TARGETS["onnx"]
    original = type(target).convert

    def patched(self, ctx):
        bad = copy.deepcopy(ctx.model)
        with torch.no_grad():
            bad.head.bias.add_(torch.linspace(-2.0, 2.0, bad.head.bias.numel()))
        ctx.model = bad
        ctx.shared.pop(ctx.program_key, None)  # trace the perturbed network, not the shared original
        return original(self, ctx)

    mp = pytest.MonkeyPatch()
    mp.setattr(target, "convert", patched.__get__(target))
    try:
        with pytest.raises(NumericsError) as ei:
            export(tiny(attention=False), target="onnx", out=out, img_size=IMG)
    finally:
        mp.undo()
    return ei.value


def test_broken_artifact_fails_the_gate_and_is_kept_marked_failed(broken_export) -> None:
    err = broken_export
    assert err.exit_code == 3
    assert "onnx-fp32" in err.message and "logits" in err.message and "sqnr_db" in err.message
    (r,) = err.results
    assert not r.passed and r.artifact.is_file()
    m = json.loads((r.path / "manifest.json").read_text())
    assert m["status"] == "failed-numerics" and m["numerics"]["passed"] is False
    fails = {f["metric"]: f for f in m["numerics"]["failures"]}
    assert fails["sqnr_db"]["output"] == "logits" and fails["sqnr_db"]["value"] < 40
    assert fails["sqnr_db"]["limit"] == 60.0
    # the deploy form itself was fine: the breach is the artifact's
    assert m["numerics"]["deploy_form"]["outputs"]["logits"]["sqnr_db"] > 100


def test_verify_reruns_the_gate_on_a_broken_artifact(broken_export) -> None:
    (r,) = broken_export.results
    with pytest.raises(NumericsError, match="sqnr_db"):
        verify(r.path, model=tiny(attention=False))
    res = verify(r.path, model=tiny(attention=False), strict=False)
    assert not res.passed and res.report["outputs"]["logits"]["sqnr_db"] < 40


def test_verify_of_a_module_export_needs_the_module(broken_export) -> None:
    (r,) = broken_export.results
    with pytest.raises(EdgeError, match="nn.Module"):
        verify(r.path)


# ------------------------------------------------------------------- Core ML on macOS: gated in both runtimes


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_on_macos_core_ml_is_gated_in_both_runtimes(tmp_path, monkeypatch, offset: float) -> None:
    """On macOS the gate runs the Core ML runtime beside edge's MIL interpreter, and either one can fail it.

    The Core ML runtime cannot exist on Linux, so this is the one stand-in: the platform reads as Darwin to the
    Core ML adapter only, and its "Core ML" runner is the MIL interpreter's outputs plus ``offset`` (a runtime
    that agrees, or one that does not). The conversion, the MIL interpreter and the gate are real.
    """
    import types

    from edge.export.targets import coreml

    target = TARGETS["coreml"]
    calls = []

    def standin_runner(self, artifact, io):
        mil = self.runner(artifact, io)

        def run(x):
            calls.append(x.shape)
            return [y + offset for y in mil(x)]

        return run

    monkeypatch.setattr(coreml, "platform", types.SimpleNamespace(system=lambda: "Darwin"))
    monkeypatch.setattr(type(target), "_coreml_runner", standin_runner)
    if offset == 0.0:
        (r,) = export(tiny(attention=False), target="coreml", out=tmp_path, img_size=IMG)
        num = r.manifest["numerics"]
        assert r.passed and num["runtime"] == "mil-interpreter+coreml"
        assert set(num["by_runtime"]) == {"mil-interpreter", "coreml"}
        assert num["by_runtime"]["coreml"]["logits"]["sqnr_db"] > 60
    else:
        with pytest.raises(NumericsError, match="sqnr_db") as ei:
            export(tiny(attention=False), target="coreml", out=tmp_path, img_size=IMG)
        assert "(coreml)" in ei.value.message  # the report names the runtime that disagreed
        (r,) = ei.value.results
        num = json.loads((r.path / "manifest.json").read_text())["numerics"]
        assert not num["passed"] and num["failures"]
        assert {f["runtime"] for f in num["failures"]} == {"coreml"}  # the MIL interpreter agreed
        assert num["by_runtime"]["mil-interpreter"]["logits"]["sqnr_db"] > 60
    assert len(calls) == num["samples"]


# ---------------------------------------------------------------------------------------- quantize stage


def test_integer_precision_runs_the_quantize_stage(tmp_path) -> None:
    stream = io.StringIO()
    from edge._progress import Progress

    (r,) = export(tiny(attention=False), target="onnx", precision="int8", out=tmp_path, img_size=IMG,
                  progress=Progress(stream=stream))
    m = r.manifest
    assert r.passed and m["precision"] == "int8" and r.path.name == "onnx-int8"
    assert m["quantization"] and m["quantization"]["mode"] == "int8"
    assert m["numerics"]["samples"] == 16
    assert sorted(p.name for p in r.path.iterdir()) == ["manifest.json", "model.onnx"]  # no float leftovers
    assert "quantize" in m["stage_seconds"]
    log = stream.getvalue()
    for stage in ("load", "reference", "convert", "quantize", "verify", "write"):
        assert f"[start] {stage}" in log and f"[ok] {stage}" in log  # plain lines without a TTY


def test_unsupported_quantization_mode_is_refused_before_converting(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(TARGETS["coreml"], "convert", lambda ctx: pytest.fail("converted anyway"))
    with pytest.raises(EdgeError, match="coreml does not support --int8-dynamic"):
        export(tiny(attention=False), target="coreml", precision="int8dyn", out=tmp_path / "o", img_size=IMG)
    assert _files(tmp_path / "o") == []


def test_missing_quantizer_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "edge.export.quantize", None)
    with pytest.raises(EdgeError, match="needs edge.export.quantize"):
        export(tiny(attention=False), target="onnx", precision="int8", out=tmp_path / "o", img_size=IMG)
    assert _files(tmp_path / "o") == []


# ---------------------------------------------------------------------------------------------- bad input


def _cli_fails(argv: list[str], out: Path, capsys, match: str) -> str:
    rc = main(["export", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0, err
    assert match in err, err
    assert "Traceback" not in err
    assert _files(out) == [] or all(p.is_dir() and not any(p.iterdir()) for p in _files(out) if p != out)
    return err


def test_unknown_model_suggests_close_names(tmp_path, capsys) -> None:
    err = _cli_fails(["ghostnet-1.0", "--target", "onnx"], tmp_path / "out", capsys, "unknown model 'ghostnet-1.0'")
    assert "did you mean" in err and "ghostnet-1.0x" in err


def test_image_size_the_network_cannot_take(tmp_path, capsys) -> None:
    err = _cli_fails(["ghostnet-1.0x", "--img-size", "100"], tmp_path / "out", capsys,
                     "ghostnet-1.0x cannot take --img-size 100")
    assert "try --img-size 96" in err


def test_checkpoint_that_does_not_fit(tmp_path, capsys) -> None:
    ck = tmp_path / "tiny.pth"
    torch.save(tiny().state_dict(), ck)
    _cli_fails(["mobilenetv2-1.0", "--target", "onnx", "--checkpoint", str(ck)], tmp_path / "out", capsys,
               "does not fit mobilenetv2-1.0")


def test_checkpoint_that_does_not_fit_a_factory_network(tmp_path, capsys) -> None:
    factory = _factory_file(tmp_path)
    ck = tmp_path / "tiny_attn.pth"
    torch.save(tiny(attention=True).state_dict(), ck)  # has attention weights the conv-only net lacks
    _cli_fails([f"{factory}:build", "--target", "onnx", "--checkpoint", str(ck)], tmp_path / "out", capsys,
               "unexpected")


def test_output_dir_that_cannot_be_written(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = main(["export", "ghostnet-1.0x", "--target", "onnx", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be written" in err and "is a file" in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize(("spec", "match"), [
    ("missing.py:build", "does not exist"),
    ("{f}:nothing_here", "has no 'nothing_here'"),
    ("{f}:not_a_net", "returned int, not a torch.nn.Module"),
    ("{f}:NUMBER", "is a int, not a function or nn.Module"),
    ("{f}:broken", "raised ValueError: no weights here"),
    ("{f}", "not a valid 'path/to/file.py:factory' spec"),
])
def test_bad_factory_specs(tmp_path, capsys, spec: str, match: str) -> None:
    factory = _factory_file(tmp_path)
    spec = spec.format(f=factory) if "{f}" in spec else str(tmp_path / spec)
    _cli_fails([spec, "--target", "onnx"], tmp_path / "out", capsys, match)


def test_network_that_cannot_take_the_size_is_caught_before_tracing(tmp_path, capsys) -> None:
    factory = _factory_file(tmp_path)
    _cli_fails([f"{factory}:build", "--target", "onnx", "--img-size", "1"], tmp_path / "out", capsys,
               "failed on a [1, 3, 1, 1] input")


def test_users_module_is_not_modified(tmp_path, monkeypatch) -> None:
    net = tiny(attention=False).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    monkeypatch.setattr(TARGETS["tflite"], "convert", lambda ctx: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export(net, target="tflite", out=tmp_path, img_size=IMG)
    assert net.training and isinstance(net.stem[1], torch.nn.BatchNorm2d)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(("kw", "match"), [
    ({"target": "onnx", "image_input": True}, "applies to Core ML only"),
    ({"target": "all", "image_input": True, "channels_last": True}, "cannot be combined"),
    ({"target": "onnx", "opset": 12}, "--opset 12 is not available"),
    ({"target": "tensorrt"}, "unknown target 'tensorrt'"),
    ({"target": "onnx", "precision": "int4"}, "unknown precision 'int4'"),
    ({"target": "onnx,coreml", "precision": "int8", "quant": QuantOptions(engine="pt2e")}, "applies to TFLite only"),
])
def test_contradictory_options_are_refused_up_front(tmp_path, kw, match) -> None:
    with pytest.raises(EdgeError, match=match):
        export(tiny(attention=False), out=tmp_path / "o", img_size=IMG, **kw)
    assert _files(tmp_path / "o") == []

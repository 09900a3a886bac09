"""`edge bench` / `edge-bench` and `edge devices` from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from edge._io import read_jsonl, sha256_path
from edge.cli import main


def test_bench_cli_table_and_json(tiny_models, tmp_path, capsys):
    js = tmp_path / "summary.json"
    rc = main(["bench", str(tiny_models["tflite"]), str(tiny_models["onnx"]), "--runs", "5", "--warmup", "1",
               "--min-seconds", "0", "--trials", "2", "--out", str(tmp_path / "r"), "--json", str(js)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "median ms" in out and "95% CI" in out and "tiny.tflite" in out and "onnxruntime/cpu" in out
    assert "[start] prepare tiny.tflite on host" in err and "trial 2/2" in err  # progress lines
    summaries = json.loads(js.read_text())
    assert [s["runtime"] for s in summaries] == ["litert", "onnxruntime"]
    trials = read_jsonl(tmp_path / "r" / "trials.jsonl")
    assert len(trials) == 4 and all(t["min_seconds"] == 0 and len(t["samples_ms"]) == 5 for t in trials)


def test_bench_cli_auto_trials_options(tiny_models, tmp_path, capsys):
    """The default is `--trials auto`; --target-ci and --max-trials reach the rule."""
    rc = main(["bench", str(tiny_models["onnx"]), "--runs", "2", "--warmup", "0", "--min-seconds", "0",
               "--target-ci", "1e-9", "--max-trials", "2", "--out", str(tmp_path / "r"), "--json", "-"])
    out, err = capsys.readouterr()
    assert rc == 0
    (s,) = json.loads(out)
    assert s["trials"] == 2 and s["trials_rule"]["target_ci_pct"] == 1e-9 and not s["trials_rule"]["target_met"]
    assert "trial 2/<=2" in err and "95% CI still" in err


def test_bench_cli_errors_are_one_line(tiny_models, tmp_path, capsys):
    rc = main(["bench", str(tmp_path / "missing.tflite")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "no artifact or export folder" in err and "--target" in err
    rc = main(["bench", str(tiny_models["onnx"]), "--device", "ssh://", "--out", str(tmp_path / "r")])
    assert rc == 2 and "is not ssh://[user@]host[:port]" in capsys.readouterr().err
    rc = main(["bench", str(tiny_models["onnx"]), "--trials", "0"])
    assert rc == 2 and "--trials 0: need a whole number >= 1 or `auto`" in capsys.readouterr().err


def test_bench_exports_first(tiny_models, tmp_path, monkeypatch, capsys):
    """`edge bench MODEL --target tflite --int8` calls edge.export.export and benches the folder it wrote.

    The exporter is replaced by one that writes a finished export folder at once (a real zoo export takes
    minutes); the bench side of the hand-over is real.
    """
    import edge.export

    calls = []

    def fake_export(name, target, precision, out):
        calls.append((name, target, precision, out))
        d = Path(out) / name / f"{target}-{precision}"
        d.mkdir(parents=True)
        (d / "model.tflite").write_bytes(tiny_models["tflite"].read_bytes())
        man = {"schema": "edge.manifest/1", "model": name, "target": target, "precision": precision, "status": "ok",
               "artifact": {"file": "model.tflite", "sha256": sha256_path(d / "model.tflite")}}
        (d / "manifest.json").write_text(json.dumps(man))
        return [SimpleNamespace(path=d)]

    monkeypatch.setattr(edge.export, "export", fake_export)
    rc = main(["bench", "ghostnet-1.0x", "--target", "tflite", "--int8", "--export-out", str(tmp_path / "out"),
               "--runs", "2", "--warmup", "0", "--min-seconds", "0", "--trials", "1", "--out", str(tmp_path / "r"),
               "-q"])
    assert rc == 0, capsys.readouterr().err
    assert calls == [("ghostnet-1.0x", "tflite", "int8", str(tmp_path / "out"))]
    t = read_jsonl(tmp_path / "r" / "trials.jsonl")[0]
    assert (t["model"], t["target"], t["precision"]) == ("ghostnet-1.0x", "tflite", "int8")


def test_devices_lists_host_and_profiles(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-adb-here"))  # no adb: only host and profiles
    prof = tmp_path / "profiles"
    prof.mkdir()
    (prof / "board.toml").write_text('transport = "ssh"\nhost = "pi@127.0.0.1"\nport = 1\n')
    assert main(["devices", "--profiles", str(prof), "--no-check"]) == 0
    out = capsys.readouterr().out
    assert "host" in out and "board" in out and "ssh://pi@127.0.0.1:1" in out and "not checked" in out
    assert main(["devices", "--profiles", str(prof), "--json", "--no-check"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["device"] for r in rows] == ["host", "board"]


def test_profile_same_kind_as_travels_with_the_trial_device(tmp_path):
    """A profile saying which named phone it stands in for: the device record that trials carry says so too, and
    the claims rules accept it for that phone (and never a host result)."""
    from edge.claims.verdict import device_matches
    from edge.devices.adb import AdbDevice
    from edge.devices.host import HostDevice
    from edge.devices.profiles import load_profile

    f = tmp_path / "lab.toml"
    f.write_text('name = "lab-phone"\ntransport = "adb"\nserial = "R5CT"\nsame_kind_as = ["Pixel 6"]\n')
    d = AdbDevice(load_profile(f)).describe()
    assert d["same_kind_as"] == ["Pixel 6"] and d["profile"] == {"name": "lab-phone", "source": str(f)}
    assert device_matches(d, "Pixel 6") and not device_matches(d, "iPhone 12")
    h = tmp_path / "host.toml"
    h.write_text('name = "my-host"\ntransport = "host"\nsame_kind_as = "Pixel 6"\n')
    hd = HostDevice(load_profile(h)).describe()
    assert hd["same_kind_as"] == ["Pixel 6"] and not device_matches(hd, "Pixel 6")

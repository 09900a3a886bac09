"""The host device: ONNX Runtime and LiteRT in-process, the result files, resume and the export-folder input."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from edge._io import read_jsonl, sha256_path
from edge._progress import Progress
from edge.devices import bench, load_artifacts, load_summaries
from edge.devices.runner import measure
from edge.errors import EdgeError


def test_litert_and_ort_on_host(tiny_models, tmp_path):
    rep = bench([tiny_models["tflite"], tiny_models["onnx"]], "host", runs=20, warmup=3, min_seconds=0, trials=3,
                out=tmp_path / "r", op_profile=True)
    by_rt = {s["runtime"]: s for s in rep.summaries}
    assert set(by_rt) == {"litert", "onnxruntime"}
    for s in rep.summaries:
        assert s["schema"] == "edge.bench.summary/1" and s["trials"] == 3 and s["complete"]
        lo, hi = s["ci95_ms"]
        assert 0 < lo <= s["median_ms"] <= hi
        assert s["p10_ms"] <= s["median_ms"] <= s["p90_ms"]
        assert set(s["drift"]) >= {"latency_rising", "temperature_rising", "frequency_falling"}
    trials = read_jsonl(tmp_path / "r" / "trials.jsonl")
    assert len(trials) == 6
    t = trials[0]
    assert t["schema"] == "edge.bench.trial/1" and t["artifact_sha256"] == sha256_path(tiny_models["tflite"])
    assert t["device"]["id"] == "host" and t["device"]["fingerprint"]["versions"]["onnxruntime"]
    assert len(t["samples_ms"]) == 20 and t["runs"] == 20 and t["warmup"] == 3
    lat = t["latency_ms"]
    assert lat["min"] <= lat["p10"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert lat["first"] > 0 and lat["init"] > 0 and lat["trimmed_mean"] > 0
    ort = next(t for t in trials if t["runtime"] == "onnxruntime")
    assert {r["op"] for r in ort["op_profile"]} >= {"Conv", "CumSum"}
    assert all(r["provider"] == "CPUExecutionProvider" for r in ort["op_profile"])


def test_trials_last_at_least_min_seconds(tiny_models, tmp_path):
    """As benchmark_model's --min_secs: a trial times --runs inferences, then goes on until min_seconds have passed.
    The setting is part of a run's identity, so a resume with another value starts a new run."""
    bench(tiny_models["tflite"], "host", runs=5, warmup=0, min_seconds=0.3, trials=1, out=tmp_path)
    (t,) = read_jsonl(tmp_path / "trials.jsonl")
    assert t["runs"] == 5 and t["min_seconds"] == 0.3
    assert t["measured_runs"] == len(t["samples_ms"]) > 5
    # the samples cover the 0.3 s except the clock reads between runs (well under a microsecond each, against
    # tens of microseconds per run of the tiny model)
    assert sum(t["samples_ms"]) >= 0.8 * 300
    bench(tiny_models["tflite"], "host", runs=5, warmup=0, min_seconds=0, trials=1, out=tmp_path, resume=True)
    first, second = read_jsonl(tmp_path / "trials.jsonl")
    assert second["run_id"] != first["run_id"] and len(second["samples_ms"]) == 5
    assert len(measure(str(tiny_models["tflite"]), runs=3, warmup=0)["samples_ms"]) == 3  # the runner defaults to 0 s


def test_litert_delegate_coverage_matches_the_graph(tiny_models):
    """XNNPACK coverage from the DELEGATE node's dataflow equals the ops XNNPACK can take (all but CUMSUM)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = Interpreter(str(tiny_models["tflite"]),
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = [o["op_name"] for o in plain._get_ops_details()]
    r = measure(str(tiny_models["tflite"]), runs=2, warmup=0)
    assert r["delegate_coverage"]["total"] == len(ops)
    assert r["delegate_coverage"]["delegated"] == len(ops) - ops.count("CUMSUM")
    assert r["delegate_coverage"]["fallback_ops"] == {"CUMSUM": ops.count("CUMSUM")}
    assert measure(str(tiny_models["tflite"]), runs=2, warmup=0, delegate="cpu")["delegate_coverage"] is None


def test_require_full_delegation_on_host(tiny_models, tmp_path):
    with pytest.raises(EdgeError, match=r"xnnpack on host took 5 of 6 nodes; 1 fall back to the CPU \(CUMSUM x1\)"):
        bench(tiny_models["tflite"], "host", runs=2, warmup=0, min_seconds=0, trials=1, out=tmp_path / "a",
              require_full_delegation=True)
    # ONNX Runtime's CPU provider runs every node; its coverage comes from the op profile
    rep = bench(tiny_models["onnx"], "host", runs=2, warmup=0, min_seconds=0, trials=1, out=tmp_path / "b",
                op_profile=True, require_full_delegation=True)
    cov = rep.summaries[0]["delegate_coverage"]
    assert cov["delegated"] == cov["total"]


def test_resume_after_interrupt(tiny_models, tmp_path, monkeypatch):
    """A run that stops after trial 2 of 4 continues with trial 3 under the same run id."""
    from edge.devices import host

    calls = {"n": 0}
    real = host.HostDevice.run_trial

    def flaky(self, artifact, spec):
        calls["n"] += 1
        if calls["n"] == 3:
            from edge.errors import DeviceError
            raise DeviceError("simulated loss of the device")
        return real(self, artifact, spec)

    monkeypatch.setattr(host.HostDevice, "run_trial", flaky)
    with pytest.raises(EdgeError, match="simulated loss of the device; 2 of 4 trial"):
        bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, trials=4, out=tmp_path)
    monkeypatch.setattr(host.HostDevice, "run_trial", real)
    # a different setting is a different run: nothing to resume there
    bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, trials=1, threads=2, out=tmp_path, resume=True)
    bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, trials=4, out=tmp_path, resume=True)
    trials = [t for t in read_jsonl(tmp_path / "trials.jsonl") if t["threads"] == 1]
    assert [t["trial"] for t in trials] == [1, 2, 3, 4] and len({t["run_id"] for t in trials}) == 1
    sums = {s["threads"]: s for s in load_summaries(tmp_path)}
    assert sums[1]["complete"] and sums[1]["trials"] == 4 and sums[2]["trials"] == 1


def test_auto_trials_stop_at_the_target_ci(tiny_models, tmp_path):
    """The default `--trials auto`: stops at min_trials when the CI is within target, runs to max when never."""
    from edge.devices.bench import AUTO_MIN_TRIALS
    from edge.devices.results import TRIALS_FILE

    loose = bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, target_ci=1e6, out=tmp_path / "a")
    (s,) = loose.summaries
    assert s["trials"] == AUTO_MIN_TRIALS and s["complete"] and s["trials_rule"]["target_met"]
    assert len(read_jsonl(tmp_path / "a" / TRIALS_FILE)) == AUTO_MIN_TRIALS
    log = io.StringIO()
    strict = bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, target_ci=1e-9, max_trials=4,
                   out=tmp_path / "b", progress=Progress(stream=log))
    msgs = log.getvalue().splitlines()
    (s,) = strict.summaries
    assert s["trials"] == 4 and s["complete"] and not s["trials_rule"]["target_met"]
    assert s["trials_rule"] == {"min_trials": 4, "max_trials": 4, "target_ci_pct": 1e-9, "target_met": False}
    assert any("trial 4/<=4" in m and "CI ±" in m for m in msgs)
    assert any("95% CI still" in m and "after 4 trials" in m for m in msgs)
    # a fixed run of 2 resumed as auto carries on to its rule under the same run id
    bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, trials=2, out=tmp_path / "c")
    bench(tiny_models["onnx"], "host", runs=3, warmup=0, min_seconds=0, target_ci=1e-9, max_trials=3,
          out=tmp_path / "c", resume=True)
    got = read_jsonl(tmp_path / "c" / TRIALS_FILE)
    assert [t["trial"] for t in got] == [1, 2, 3] and len({t["run_id"] for t in got}) == 1
    for bad in ("0", "two", 2.5):
        with pytest.raises(EdgeError, match="need a whole number >= 1 or `auto`"):
            bench(tiny_models["onnx"], "host", trials=bad, out=tmp_path / "d")
    with pytest.raises(EdgeError, match="--target-ci > 0"):
        bench(tiny_models["onnx"], "host", target_ci=0, out=tmp_path / "d")


def test_export_folder_manifest_is_read_as_data(tiny_models, tmp_path):
    d = tmp_path / "out" / "tiny" / "tflite-fp32"
    d.mkdir(parents=True)
    (d / "model.tflite").write_bytes(tiny_models["tflite"].read_bytes())
    man = {"schema": "edge.manifest/1", "model": "tiny", "target": "tflite", "precision": "fp32", "status": "ok",
           "artifact": {"file": "model.tflite", "sha256": sha256_path(d / "model.tflite"), "size_bytes": 1}}
    (d / "manifest.json").write_text(json.dumps(man))
    (a,) = load_artifacts(tmp_path / "out")  # a folder of export folders
    assert (a.model, a.target, a.precision) == ("tiny", "tflite", "fp32")
    rep = bench(d, "host", runs=2, warmup=0, min_seconds=0, trials=1, out=tmp_path / "r")
    assert rep.summaries[0]["model"] == "tiny" and rep.summaries[0]["precision"] == "fp32"
    man["artifact"]["sha256"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(EdgeError, match="does not match the sha256 in its manifest"):
        load_artifacts(d)


def test_bad_inputs(tiny_models, tmp_path):
    with pytest.raises(EdgeError, match="no artifact or export folder"):
        bench(tmp_path / "nope.tflite", "host")
    (tmp_path / "x.pt").write_bytes(b"x")
    with pytest.raises(EdgeError, match="unknown model format"):
        bench(tmp_path / "x.pt", "host")
    with pytest.raises(EdgeError, match="delegate gpu is not available on the host"):
        bench(tiny_models["tflite"], "host", delegate="gpu", trials=1, out=tmp_path / "r")
    with pytest.raises(EdgeError, match="not big, prime, all"):
        bench(tiny_models["tflite"], "host", cores="bigg", out=tmp_path / "r")
    with pytest.raises(EdgeError, match="unknown device 'phone9'"):
        bench(tiny_models["tflite"], "phone9", out=tmp_path / "r")
    with pytest.raises(EdgeError, match="--min-seconds -1: need .* --min-seconds >= 0"):
        bench(tiny_models["tflite"], "host", min_seconds=-1, out=tmp_path / "r")
    if sys.platform != "darwin":
        pkg = tmp_path / "m.mlpackage"
        pkg.mkdir()
        with pytest.raises(EdgeError, match="Core ML runs only on macOS"):
            bench(pkg, "host", trials=1, out=tmp_path / "r")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_explicit_core_mask_pins_the_trial(tiny_models, tmp_path):
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    rep = bench(tiny_models["tflite"], "host", runs=2, warmup=0, min_seconds=0, trials=1, cores=format(1 << cpu, "x"),
                out=tmp_path / "r")
    t = read_jsonl(tmp_path / "r" / "trials.jsonl")[0]
    assert t["cpu_mask"] == format(1 << cpu, "x") and rep.summaries[0]["cores"] == format(1 << cpu, "x")
    assert os.sched_getaffinity(0) == before  # restored after the trial

"""Every benchmark-binary output variant in the shared device notes, parsed into edge's fields.

The benchmark_model texts follow the formats of real runs (the first is the run quoted in the notes);
benchmark_litert_model_py.txt is real output of ai-edge-litert's Python tool on the test model, and
ort_profile.json a real ONNX Runtime profile of it.
"""

from __future__ import annotations

import json

import pytest

from edge.cli import main
from edge.devices.parsers import detect_format, op_profile_from_file, parse_ort_profile, parse_output
from edge.errors import EdgeError
from tests.devices.conftest import FIXTURES


def _p(name: str, fmt: str | None = None) -> dict:
    return parse_output((FIXTURES / name).read_text(), fmt)


def test_benchmark_model_release_2_17():
    r = _p("benchmark_model_v2_17.txt")
    lat = r["latency_ms"]
    assert r["runtime"] == "benchmark_model" and r["runs"] == 50  # the timed line, not the warm-up count=1
    assert lat["min"] == pytest.approx(2727.568) and lat["max"] == pytest.approx(3189.954)
    assert lat["mean"] == pytest.approx(2950.34) and lat["std"] == pytest.approx(109.798)  # e-notation avg
    assert lat["init"] == pytest.approx(17.187) and lat["first"] == pytest.approx(3512.391)
    assert lat["median"] == lat["mean"] and any("no median" in n for n in r["notes"])
    assert r["memory_mb"] == {"init": 4.21094, "overall": 46.0859} and r["peak_memory_mb"] == 46.0859
    assert r["delegate_coverage"] is None and any("completely executed" in n for n in r["notes"])


def test_benchmark_model_older_peak_memory_line():
    r = _p("benchmark_model_old_peak.txt")
    assert r["runs"] == 50 and r["latency_ms"]["mean"] == pytest.approx(127.0)
    assert r["memory_mb"] == {"init": 4.0625, "overall": 21.4805} and r["peak_memory_mb"] == 21.4805


def test_benchmark_model_logcat_prefixes_percentiles_and_gpu_coverage():
    r = _p("benchmark_model_logcat_percentiles.txt")
    lat = r["latency_ms"]
    assert r["runs"] == 300 and lat["median"] == pytest.approx(3.306)
    assert lat["p5"] == pytest.approx(3.160) and lat["p95"] == pytest.approx(3.610)
    assert lat["init"] == pytest.approx(880.324)
    assert r["memory_mb"]["peak"] == 131.641 and r["peak_memory_mb"] == 131.641  # periodic monitoring wins
    assert r["delegate_coverage"] == {"delegated": 118, "total": 122, "delegate": "TfLiteGpuDelegateV2",
                                      "partitions": 2}


def test_benchmark_model_op_profiling_tables():
    r = _p("benchmark_model_op_profiling.txt")
    assert r["runs"] == 23714 and r["latency_ms"]["median"] == pytest.approx(0.038)  # not the profiler's count=
    assert r["delegate_coverage"]["delegated"] == 5 and r["delegate_coverage"]["total"] == 6
    ops = r["op_profile"]  # the regular runs' Run Order, not the initialization one
    assert [o["op"] for o in ops] == ["TfLiteXNNPackDelegate", "CUMSUM"]
    assert ops[0]["avg_ms"] == pytest.approx(0.027) and ops[0]["pct"] == pytest.approx(75.0)
    assert ops[0]["node"] == "[serving_default_args_0:0, model/cumsum_input]:6" and ops[1]["calls"] == 1


def test_benchmark_model_op_profile_csv_file():
    ops = op_profile_from_file((FIXTURES / "benchmark_model_op_profile.csv").read_text())
    assert [o["op"] for o in ops] == ["TfLiteXNNPackDelegate", "CUMSUM"]
    assert ops[1]["avg_ms"] == pytest.approx(0.009) and ops[1]["cdf_pct"] == pytest.approx(100.0)


def test_benchmark_litert_model_python_twin():
    r = _p("benchmark_litert_model_py.txt")
    assert r["runtime"] == "benchmark_litert_model" and r["runs"] == 20
    lat = r["latency_ms"]
    assert lat["median"] == pytest.approx(0.02) and lat["init"] == pytest.approx(1.53)
    assert lat["first"] == pytest.approx(0.14) and lat["p95"] == pytest.approx(0.03)
    assert r["delegate_coverage"] == {"delegated": None, "total": None, "full": False}


def test_benchmark_litert_model_cpp_shares_benchmark_model_format():
    r = _p("benchmark_model_logcat_percentiles.txt", "benchmark_litert_model")
    assert r["runtime"] == "benchmark_litert_model" and r["runs"] == 300


@pytest.mark.parametrize("name", ["perf_test.txt", "perf_test_newer.txt"])
def test_onnxruntime_perf_test_units(name):
    r = _p(name)
    lat = r["latency_ms"]
    assert r["runtime"] == "onnxruntime_perf_test"
    if name == "perf_test.txt":
        # the average is in ms and the percentiles in seconds: both come out in ms
        assert lat["mean"] == pytest.approx(19.918) and lat["median"] == pytest.approx(19.9047)
        assert lat["p90"] == pytest.approx(20.0978) and lat["min"] == pytest.approx(19.7812)
        assert lat["init"] == pytest.approx(50.8382) and r["runs"] == 100
        assert r["peak_memory_mb"] == pytest.approx(109531136 / 2**20)
    else:
        assert lat["mean"] == pytest.approx(12.24) and lat["first"] == pytest.approx(31.0)
        assert lat["median"] == pytest.approx(12.1) and r["runs"] == 50


def test_ort_profile_json():
    rows, cov = parse_ort_profile((FIXTURES / "ort_profile.json").read_text())
    assert [r["op"] for r in rows] == ["Conv", "ReorderOutput", "ReduceMean", "Gemm"]
    assert all(r["provider"] == "CPUExecutionProvider" for r in rows) and cov["delegated"] == cov["total"] == 4
    assert sum(r["pct"] for r in rows) == pytest.approx(100.0)
    assert all(r["avg_ms"] > 0 and r["calls"] == 1 for r in rows)


def test_detection_and_errors():
    assert detect_format((FIXTURES / "perf_test.txt").read_text()) == "perf_test"
    assert detect_format((FIXTURES / "benchmark_model_v2_17.txt").read_text()) == "benchmark_model"
    with pytest.raises(EdgeError, match="cannot tell which benchmark binary"):
        parse_output("Segmentation fault\n")
    with pytest.raises(EdgeError, match="no timing line"):
        parse_output("INFO: STARTING!\nERROR: Failed to mmap model\n", "benchmark_model")
    with pytest.raises(EdgeError, match="unknown output format"):
        parse_output("count=1", "tensorrt")


def test_cli_parse_and_bench_parse(capsys):
    for argv in (["parse", str(FIXTURES / "perf_test.txt")],
                 ["bench", "parse", str(FIXTURES / "perf_test.txt"), "--format", "perf_test"]):
        assert main(argv) == 0
        rec = json.loads(capsys.readouterr().out)
        assert rec["schema"] == "edge.bench.trial/1" and rec["runtime"] == "onnxruntime_perf_test"
        assert rec["latency_ms"]["median"] == pytest.approx(19.9047) and rec["target"] == "onnx"
    assert main(["parse", str(FIXTURES / "nope.txt")]) == 2
    assert "no such file" in capsys.readouterr().err

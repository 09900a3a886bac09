"""Turn the text that benchmark binaries print into edge's result fields.

Formats (see docs/shared device-tools notes):

- ``benchmark_model`` (TFLite/LiteRT, and the C++ ``benchmark_litert_model``, which shares its output):
  ``count=... first=... min=... avg=... std=...`` lines in microseconds (newer builds add
  ``p5= median= p95=``), ``Inference timings in us: Init: ..., First inference: ...``, memory lines
  (``Memory footprint delta ...``, older ``Peak memory footprint (MB): ...``, ``Overall peak memory
  footprint (MB) via periodic monitoring: X``), ``Replacing N out of M node(s) with delegate (...)``,
  and op-profiling tables (tab-separated on stdout, comma-separated with ``--profiling_output_csv_file``).
  Lines may carry ``INFO:`` or logcat prefixes; numbers may be in e-notation.
- ``benchmark_litert_model.py`` (the Python twin shipped in ai-edge-litert): a ``BENCHMARK RESULTS`` block
  in milliseconds.
- ``onnxruntime_perf_test``: the average in ms, percentiles in seconds (units are read from each line),
  ``Peak working set size`` in bytes; ``-p`` writes a Chrome-trace JSON profile (``parse_ort_profile``).

Every parser returns the same dict: ``runtime``, ``latency_ms`` (median, p10, p90, trimmed_mean, min, max,
mean, std, first, init; None where the binary does not say), ``samples_ms`` (empty: binaries print
aggregates), ``runs``, ``peak_memory_mb``, ``memory_mb``, ``delegate_coverage``, ``op_profile``, ``notes``.
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any

from edge.errors import EdgeError

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
FORMATS = ("benchmark_model", "benchmark_litert_model", "perf_test")
FORMAT_ALIASES = {"onnxruntime_perf_test": "perf_test", "tflite": "benchmark_model",
                  "benchmark_litert_model.py": "benchmark_litert_model", "litert_python": "benchmark_litert_model"}
LATENCY_KEYS = ("median", "p10", "p90", "trimmed_mean", "min", "max", "mean", "std", "first", "init")


def _empty(runtime: str) -> dict[str, Any]:
    return {"runtime": runtime, "latency_ms": dict.fromkeys(LATENCY_KEYS), "samples_ms": [], "runs": None,
            "peak_memory_mb": None, "memory_mb": {}, "delegate_coverage": None, "op_profile": None, "notes": []}


def _kv(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(rf"\b([a-z0-9_]+)=({NUM})", line)}


# --------------------------------------------------------------------------------------- benchmark_model
def parse_benchmark_model(text: str, runtime: str = "benchmark_model") -> dict[str, Any]:
    """Parse benchmark_model / C++ benchmark_litert_model output; microseconds become milliseconds."""
    out = _empty(runtime)
    lines = text.splitlines()
    count_lines: list[tuple[int, dict[str, float]]] = []
    timings_at = None
    for i, line in enumerate(lines):
        if "Timings (microseconds)" in line or "Memory (bytes)" in line:
            continue  # the per-op profiler's own summary lines, not the benchmark's
        if re.search(r"(?:^|[\s:])count=\d", line):
            kv = _kv(line[line.index("count="):])
            if "count" in kv:
                count_lines.append((i, kv))
        if "Inference timings in us" in line and timings_at is None:
            timings_at = i
            m = re.search(rf"Init:\s*({NUM})", line)
            if m:
                out["latency_ms"]["init"] = float(m.group(1)) / 1e3
            m = re.search(rf"First inference:\s*({NUM})", line)
            if m:
                out["latency_ms"]["first"] = float(m.group(1)) / 1e3
            m = re.search(rf"Inference \(avg\):\s*({NUM})", line)
            if m:
                out["inference_avg_ms"] = float(m.group(1)) / 1e3
        m = re.search(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):"
                      rf"\s*init=({NUM})\s+overall=({NUM})", line)
        if m:
            out["memory_mb"]["init"] = float(m.group(1))
            out["memory_mb"]["overall"] = float(m.group(2))
        m = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({NUM})", line)
        if m:
            out["memory_mb"]["peak"] = float(m.group(1))
        m = re.search(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\)(?:[^,]*,\s*yielding (\d+)"
                      r" partitions?)?", line)
        if m:
            out["delegate_coverage"] = {"delegated": int(m.group(1)), "total": int(m.group(2)),
                                        "delegate": m.group(3).strip()}
            if m.group(4):
                out["delegate_coverage"]["partitions"] = int(m.group(4))
        if "will be completely executed by the delegate" in line or "partially executed by the delegate" in line:
            out["notes"].append(line.split("INFO:")[-1].strip())
    if not count_lines:
        raise EdgeError("no timing line (count=... avg=...) found in benchmark_model output",
                        "pass the complete output of the run; a crash before the timed runs prints none")
    before = [c for c in count_lines if timings_at is None or c[0] < timings_at]
    kv = (before or count_lines)[-1][1]
    lat = out["latency_ms"]
    for src, dst in (("min", "min"), ("max", "max"), ("avg", "mean"), ("std", "std"), ("median", "median"),
                     ("p50", "median"), ("p10", "p10"), ("p90", "p90")):
        if src in kv:
            lat[dst] = kv[src] / 1e3
    for extra in ("p5", "p95", "p99"):
        if extra in kv:
            lat[extra] = kv[extra] / 1e3
    if lat["first"] is None and "first" in kv:
        lat["first"] = kv["first"] / 1e3
    if lat["median"] is None and lat["mean"] is not None:
        lat["median"] = lat["mean"]
        out["notes"].append("this build prints no median; the average stands in for it")
    out["runs"] = int(kv["count"])
    mem = out["memory_mb"]
    out["peak_memory_mb"] = mem.get("peak", mem.get("overall"))
    out["op_profile"] = parse_op_profile(text)
    return out


# --------------------------------------------------------------------------- benchmark_litert_model (py)
_LITERT_PY = {
    "Model initialization": "init", "Warmup (first)": "first", "Inference (avg)": "mean",
    "Inference (min)": "min", "Inference (max)": "max", "Inference (median)": "median",
    "Inference (std)": "std", "Inference (p5)": "p5", "Inference (p95)": "p95",
}


def parse_benchmark_litert_py(text: str) -> dict[str, Any]:
    """Parse the ``BENCHMARK RESULTS`` block of ai-edge-litert's Python benchmark_litert_model (ms)."""
    out = _empty("benchmark_litert_model")
    found = False
    for line in text.splitlines():
        for label, key in _LITERT_PY.items():
            m = re.search(rf"{re.escape(label)}:\s*({NUM})\s*ms", line)
            if m:
                out["latency_ms"][key] = float(m.group(1))
                found = True
                if key == "mean":
                    r = re.search(r"\((\d+) runs\)", line)
                    out["runs"] = int(r.group(1)) if r else None
        m = re.search(r"Fully accelerated:\s*(True|False)", line)
        if m:
            out["delegate_coverage"] = {"delegated": None, "total": None, "full": m.group(1) == "True"}
    if not found:
        raise EdgeError("no 'Inference (...)' lines found in benchmark_litert_model output",
                        "pass the complete output, including the BENCHMARK RESULTS block")
    return out


# ----------------------------------------------------------------------------------- onnxruntime_perf_test
_UNIT = {"s": 1e3, "sec": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT.get(unit.strip().lower(), 1.0)


def parse_perf_test(text: str) -> dict[str, Any]:
    """Parse onnxruntime_perf_test output; each line's unit is read (the average is ms, percentiles s)."""
    out = _empty("onnxruntime_perf_test")
    lat = out["latency_ms"]
    found = False
    pats = {
        "init": r"Session creation time cost:\s*({n})\s*(s|ms|us)",
        "first": r"First inference time cost:\s*({n})\s*(s|ms|us)",
        "mean": r"Average inference time cost(?: total)?:\s*({n})\s*(s|ms|us)",
        "min": r"Min Latency:\s*({n})\s*(s|ms|us)",
        "max": r"Max Latency:\s*({n})\s*(s|ms|us)",
        "median": r"P50 Latency:\s*({n})\s*(s|ms|us)",
        "p90": r"P90 Latency:\s*({n})\s*(s|ms|us)",
        "p95": r"P95 Latency:\s*({n})\s*(s|ms|us)",
        "p99": r"P99 Latency:\s*({n})\s*(s|ms|us)",
        "p999": r"P999 Latency:\s*({n})\s*(s|ms|us)",
    }
    for key, pat in pats.items():
        m = re.search(pat.format(n=NUM), text)
        if m:
            lat[key] = _ms(m.group(1), m.group(2))
            found = found or key in ("mean", "median")
    m = re.search(r"Total inference requests:\s*(\d+)", text) or re.search(r"\bRuns:\s*(\d+)", text)
    if m:
        out["runs"] = int(m.group(1))
    m = re.search(r"Peak working set size:\s*(\d+)", text)
    if m:
        out["peak_memory_mb"] = int(m.group(1)) / (1024 * 1024)
        out["memory_mb"]["peak"] = out["peak_memory_mb"]
    m = re.search(rf"Avg CPU usage:\s*({NUM})", text)
    if m:
        out["cpu_usage_pct"] = float(m.group(1))
    if not found:
        raise EdgeError("no 'Average inference time cost' / 'P50 Latency' line found in onnxruntime_perf_test output",
                        "pass the complete output of a run with -s (statistics)")
    if lat["median"] is None:
        lat["median"] = lat["mean"]
        out["notes"].append("no P50 line; the average stands in for the median")
    return out


# --------------------------------------------------------------------------------------------- op profile
def _norm_header(cell: str) -> str:
    return re.sub(r"[\s_]+", " ", cell.strip().strip("[]").strip().lower())


_COLS = {"node type": "op", "start": "start_ms", "first": "first_ms", "avg ms": "avg_ms", "%": "pct",
         "cdf%": "cdf_pct", "mem kb": "mem_kb", "times called": "calls", "name": "node"}


def parse_op_profile(text: str) -> list[dict[str, Any]] | None:
    """The ``Run Order`` table of benchmark_model's op profiling (tab or comma separated), per node.

    Newer builds print an initialization profile first and the regular runs after
    ("Operator-wise Profiling Info for Regular Benchmark Runs"); the regular runs win.
    """
    lines = text.splitlines()
    start = 0
    for i, line in enumerate(lines):
        if "Profiling Info for Regular Benchmark Runs" in line or "Operator-wise Profiling Info" in line:
            start = i
    rows: list[dict[str, Any]] | None = None
    i = start
    while i < len(lines):
        if re.search(r"\bRun Order\b", lines[i]):
            table, i = _read_table(lines, i + 1)
            if table is not None:
                rows = table
                break
        i += 1
    return rows


def _read_table(lines: list[str], i: int) -> tuple[list[dict[str, Any]] | None, int]:
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines):
        return None, i
    header_line = re.sub(r"^.*?(?=\[?node type)", "", lines[i], flags=re.I)
    sep = "\t" if "\t" in header_line else ","
    header = [_norm_header(c) for c in next(csv.reader([header_line], delimiter=sep)) if c.strip()]
    if "node type" not in header or "avg ms" not in header:
        return None, i
    rows = []
    for line in lines[i + 1:]:
        i += 1
        body = line.split("INFO:", 1)[-1] if "INFO:" in line else line
        if not body.strip() or body.lstrip().startswith("="):
            break
        cells = [c.strip() for c in next(csv.reader([body], delimiter=sep))]
        cells = [c for c in cells if c != ""] if sep == "\t" else cells
        if len(cells) < len(header):
            break
        row: dict[str, Any] = {}
        for name, cell in zip(header, cells[-len(header):] if sep == "\t" else cells):
            key = _COLS.get(name)
            if key is None:
                continue
            if key in ("op", "node"):
                row[key] = cell[1:-1] if cell.startswith("[") and cell.endswith("]") else cell
            else:
                try:
                    row[key] = float(cell.rstrip("%"))
                except ValueError:
                    row[key] = None
        if "calls" in row and row["calls"] is not None:
            row["calls"] = int(row["calls"])
        rows.append(row)
    return rows or None, i


def parse_ort_profile(events: list[dict[str, Any]] | dict[str, Any] | str, runs: int | None = None,
                      provider: str = "CPUExecutionProvider") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-node average times (run order) from an ONNX Runtime profile (Chrome trace JSON), and the
    delegate coverage of ``provider``. The same code the runner uses in-process."""
    from edge.devices.runner import ort_profile_rows

    if isinstance(events, str):
        events = json.loads(events)
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    return ort_profile_rows(events, runs, provider)


# ------------------------------------------------------------------------------------------------ dispatch
def detect_format(text: str) -> str:
    if re.search(r"Average inference time cost|P50 Latency|Session creation time cost", text):
        return "perf_test"
    if "BENCHMARK RESULTS" in text and re.search(r"Inference \(avg\):\s*" + NUM + r"\s*ms", text):
        return "benchmark_litert_model"
    if re.search(r"count=\d", text):
        return "benchmark_model"
    raise EdgeError("cannot tell which benchmark binary printed this output",
                    "pass --format benchmark_model|benchmark_litert_model|perf_test")


def parse_output(text: str, format: str | None = None) -> dict[str, Any]:
    """Parse a benchmark binary's saved output; ``format`` None or "auto" detects it."""
    fmt = FORMAT_ALIASES.get(format or "auto", format or "auto")
    if fmt == "auto":
        fmt = detect_format(text)
    if fmt == "benchmark_model":
        return parse_benchmark_model(text)
    if fmt == "benchmark_litert_model":
        if "BENCHMARK RESULTS" in text and not re.search(r"count=\d", text):
            return parse_benchmark_litert_py(text)
        return parse_benchmark_model(text, runtime="benchmark_litert_model")
    if fmt == "perf_test":
        return parse_perf_test(text)
    raise EdgeError(f"unknown output format {format!r}", f"use one of: {', '.join(FORMATS)}")


def op_profile_from_file(text: str) -> list[dict[str, Any]] | None:
    """An op profile file pulled from a device: benchmark_model's CSV tables or an ORT JSON trace."""
    s = text.lstrip()
    if s.startswith("[") or s.startswith("{"):
        rows, _ = parse_ort_profile(s)
        return rows
    return parse_op_profile(text)

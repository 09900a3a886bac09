"""`edge parse FILE`: the saved output of a benchmark binary, as edge's trial record (JSON on stdout)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import EdgeError

HELP = "turn the saved output of benchmark_model / onnxruntime_perf_test into edge's result schema (JSON)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="saved output (- for stdin)")
    p.add_argument("--format", help="benchmark_model | benchmark_litert_model | perf_test (default: detect)")


def run(args: argparse.Namespace) -> int:
    return parse_files(args.files, args.format)


def parse_files(files: list[str], fmt: str | None) -> int:
    import sys

    from edge.devices.parsers import parse_output
    from edge.devices.results import TRIAL_SCHEMA

    if not files:
        raise EdgeError("no FILE given", "edge parse OUTPUT.txt [--format benchmark_model|perf_test]")
    records = []
    for f in files:
        if f == "-":
            text = sys.stdin.read()
        else:
            p = Path(f)
            if not p.is_file():
                raise EdgeError(f"no such file: {f}")
            text = p.read_text(errors="replace")
        try:
            parsed = parse_output(text, fmt)
        except EdgeError as e:
            raise EdgeError(f"{f}: {e.message}", e.hint) from None
        records.append({
            "schema": TRIAL_SCHEMA, "run_id": None, "trial": 1, "artifact": None, "artifact_sha256": None,
            "model": None, "target": "onnx" if parsed["runtime"] == "onnxruntime_perf_test" else "tflite",
            "precision": None, "device": {"id": "manual", "kind": "manual", "name": None, "fingerprint": None},
            "runtime": parsed["runtime"], "delegate": (parsed["delegate_coverage"] or {}).get("delegate"),
            "threads": None, "cores": None, "runs": parsed["runs"], "warmup": None, "min_seconds": None,
            "latency_ms": parsed["latency_ms"], "samples_ms": parsed["samples_ms"],
            "peak_memory_mb": parsed["peak_memory_mb"], "memory_mb": parsed["memory_mb"] or None,
            "delegate_coverage": parsed["delegate_coverage"], "temperature_c": None, "max_freq_khz": None,
            "op_profile": parsed["op_profile"], "notes": parsed["notes"], "source": f, "timestamp": None,
        })
    print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
    return 0

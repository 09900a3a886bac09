"""Issue 6's int8 and fp32 speed goals on another x86 CPU: does int8 get faster where the CPU has VNNI?

This 2-core VM has AVX2 but no VNNI, so XNNPACK and ONNX Runtime run int8 convolutions with 16-bit multiplies and
gain little over fp32. This script carries the artifacts that ``bench_fast_artifacts.py`` cached to a machine with
another CPU and times them there the same way (round-robin, median and p10, 1 and 2 threads):

    .venv/bin/python benchmarks/bench_other_cpu.py pack BUNDLE          # here, after bench_fast_artifacts.py
    python3 benchmarks/bench_other_cpu.py time BUNDLE --json OUT.json  # there: numpy, ai-edge-litert, onnxruntime
    .venv/bin/python benchmarks/bench_other_cpu.py doc OUT.json --notes NOTES.md   # docs/fast-artifacts-other-cpu.md

``pack`` keeps every op, shape, dtype and quantization parameter of each artifact, but fills each weight buffer of
16 KiB or more with its own first 4 KiB repeated, so the files compress to a few percent (xz) and fit the
transfer. Latency does not depend on the weights' values in these runtimes (dense kernels; no sparsity paths are
enabled), and repeating a buffer's own values keeps them real numbers of the right range (index tables stay in
range). The timing step imports neither torch nor edge.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import lzma
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fast_artifacts import SPECS, interleaved, machine, onnx_call, tflite_call  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TILE_FROM = 16 * 1024  # buffers at least this large are weights
TILE = 4096  # a multiple of every element size


def _tile(data: bytes) -> bytes:
    if len(data) < TILE_FROM:
        return data
    return np.resize(np.frombuffer(data[:TILE], np.uint8), len(data)).tobytes()


def _pack_tflite(src: Path) -> bytes:
    from edge.export.tflite_graph import _AligningBuilder, _pack, _unpack

    model = _unpack(src.read_bytes())
    for b in model.buffers:
        if b.data is not None and len(b.data) >= TILE_FROM:
            b.data = np.frombuffer(_tile(bytes(bytearray(b.data))), np.uint8)
    return _pack(model, _AligningBuilder(1024))


def _pack_onnx(src: Path) -> bytes:
    import onnx

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.raw_data:
            init.raw_data = _tile(init.raw_data)
    return model.SerializeToString()


def pack(bundle: Path, work: Path, models: list[str]) -> None:
    from bench_fast_artifacts import _image, cached_artifacts

    from edge.models import get_info

    bundle.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"packed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "networks": {}}
    for name in models:
        arts = cached_artifacts(name, work)
        picked = {"tflite": {}, "onnx": {}}
        for key, path in arts.items():
            kind, target = key.split("/")
            runtime = target.split("-")[0]
            if runtime not in picked or (kind == "edge" and target.endswith("fp16")):
                continue
            label = "reference-fp32" if kind == "reference" else f"edge-{target.split('-', 1)[1]}"
            data = _pack_tflite(path) if runtime == "tflite" else _pack_onnx(path)
            out = bundle / f"{name}.{runtime}.{label}.xz"
            out.write_bytes(lzma.compress(data, preset=6))
            picked[runtime][label] = out.name
            print(f"{name} {runtime} {label}: {path.stat().st_size / 1e6:.1f} MB -> {out.stat().st_size / 1e3:.0f} kB")
        np.save(bundle / f"{name}.input.npy", _image(name, get_info(name).input_size[-1]))
        index["networks"][name] = picked
    (bundle / "index.json").write_text(json.dumps(index, indent=1))


def time_bundle(bundle: Path, runs: int, warmup: int, threads: list[int],
                models: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    index = json.loads((bundle / "index.json").read_text())
    if models:
        index["networks"] = {k: v for k, v in index["networks"].items() if k in models}
    out: dict[str, Any] = {"machine": machine(), "runs": runs, "warmup": warmup, "networks": {},
                           "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "tools": {}}
    import importlib.metadata as md

    for d in ("ai-edge-litert", "onnxruntime", "numpy"):
        out["tools"][d] = md.version(d)
    with tempfile.TemporaryDirectory() as tmp:
        for name, runtimes in index["networks"].items():
            x = np.load(bundle / f"{name}.input.npy")
            res: dict[str, Any] = {}
            for runtime, labels in runtimes.items():
                paths = {}
                for label, fname in labels.items():
                    p = Path(tmp) / f"{name}.{label}.{runtime}"
                    p.write_bytes(lzma.decompress((bundle / fname).read_bytes()))
                    paths[label] = p
                make = tflite_call if runtime == "tflite" else onnx_call
                for th in threads:
                    calls = {label: make(p, x, th) for label, p in paths.items()}
                    res[f"{runtime}/{th}"] = interleaved(calls, runs, warmup)
                    line = "  ".join(f"{k} {v['median']:.2f}" for k, v in res[f"{runtime}/{th}"].items())
                    print(f"{name} {runtime}/{th}: {line}", flush=True)
            out["networks"][name] = res
    return out


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    return "-" if not a or not b else f"{a['median'] / b['median']:.2f}x"


def doc(result: dict[str, Any], path: Path, notes: str = "") -> None:
    """Write ``docs/fast-artifacts-other-cpu.md`` from one ``time`` result (and hand-written notes)."""
    from edge._io import write_text

    m = result["machine"]
    lines = ["# Fast artifacts on another CPU: the int8 and fp32 goals where the CPU has VNNI", "",
             f"Measured {result['date']} with `benchmarks/bench_other_cpu.py` on {m['cpu']} ({m['cores']} cores; "
             f"{', '.join(m['isa'])}), {m['os']}, Python {m['python']}, "
             + ", ".join(f"{k} {v}" for k, v in result["tools"].items())
             + f"; {result['runs']} timed runs after {result['warmup']} warm-up, round-robin, batch 1, one "
             "natural photo. The artifacts are the ones [fast-artifacts.md](fast-artifacts.md) times on the 2-core "
             "VM, with weights filled by a repeat of their own values so that they travel (latency does not depend "
             "on weight values in these runtimes). Cells are medians in ms; the ratios are edge fp32 / edge int8 "
             "(the int8 speed-up; goal 1.8x for TFLite, 1.0x for ONNX Runtime) and reference fp32 / edge fp32.", "",
             "| network | threads | TFLite ref fp32 | TFLite edge fp32 | TFLite int8 | int8 speed-up | ref / edge | "
             "ORT ref fp32 | ORT edge fp32 | ORT int8 | int8 speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in SPECS:
        r = result["networks"].get(name)
        if not r:
            continue
        for th in sorted({int(k.split("/")[1]) for k in r}):
            t, o = r.get(f"tflite/{th}", {}), r.get(f"onnx/{th}", {})

            def ms(d: dict[str, Any], k: str) -> str:
                return f"{d[k]['median']:.2f}" if k in d else "-"

            lines.append(f"| {name} | {th} | {ms(t, 'reference-fp32')} | {ms(t, 'edge-fp32')} | {ms(t, 'edge-int8')} "
                         f"| {_ratio(t.get('edge-fp32'), t.get('edge-int8'))} "
                         f"| {_ratio(t.get('reference-fp32'), t.get('edge-fp32'))} "
                         f"| {ms(o, 'reference-fp32')} | {ms(o, 'edge-fp32')} | {ms(o, 'edge-int8')} "
                         f"| {_ratio(o.get('edge-fp32'), o.get('edge-int8'))} |")
    if notes:
        lines += ["", notes.strip()]
    write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("bundle")
    p.add_argument("--work", default=str(ROOT / "out" / "fast-artifacts"))
    p.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    t = sub.add_parser("time")
    t.add_argument("bundle")
    t.add_argument("--json", required=True)
    t.add_argument("--runs", type=int, default=100)
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    t.add_argument("--models", nargs="+", help="a subset of the bundle's networks")
    d = sub.add_parser("doc")
    d.add_argument("result")
    d.add_argument("--doc", default=str(ROOT / "docs" / "fast-artifacts-other-cpu.md"))
    d.add_argument("--notes", help="markdown file appended under the table")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(Path(args.bundle), Path(args.work), args.models)
    elif args.cmd == "time":
        res = time_bundle(Path(args.bundle), args.runs, args.warmup, args.threads, args.models)
        Path(args.json).write_text(json.dumps(res, indent=1))
    else:
        notes = Path(args.notes).read_text() if args.notes else ""
        doc(json.loads(Path(args.result).read_text()), Path(args.doc), notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

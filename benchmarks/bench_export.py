"""Export speed and artifact host latency, written to docs/export-bench.md.

    .venv/bin/python benchmarks/bench_export.py                       # DEFAULT_MODELS: one per family
    .venv/bin/python benchmarks/bench_export.py --models ghostnet-1.0x --runs 100
    .venv/bin/python benchmarks/bench_export.py --wall-only --render "START"   # every variant up to 30M params

Per model:
1. ``edge-export NAME --target all`` from the shell (default ``--jobs``, imports included): the export-time goal.
   Then ``edge.export.export(name, target="all", jobs=1)`` in this process, warm: wall time of each stage (from
   the manifests) and in total.
2. The bare converter calls on the same deploy-form network (``torch.onnx.export`` + save, ``litert_torch.convert``
   + export, ``torch.export`` + ``coremltools.convert`` + save), timed after the pipeline so both run warm.
   Pipeline overhead = (pipeline total - model build - bare converters) / bare converters, given with and
   without the numerics check.
3. Host latency of each artifact against PyTorch eager (same deploy-form network), 1 and 2 threads: ONNX Runtime
   (CPU EP), LiteRT interpreter with its default XNNPACK delegate (NCHW and ``--channels-last`` artifacts). Median
   and 10th percentile of ``--runs`` timed runs after warm-up (2-thread medians are bimodal on a 2-core VM).
   Core ML cannot execute on Linux, so it has no latency row here.

Results go to ``OUT/bench.jsonl`` (one record per model, appended as it finishes) and ``docs/export-bench.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One variant per family; the CNNs and EfficientFormers are those of the fast-artifacts issue's table.
DEFAULT_MODELS = ("ghostnet-1.0x", "mobilenetv3-large-1.0", "efficientformer-l1", "efficientformerv2-s0",
                  "mobileformer-294m")
GOAL_ALL_S = 60.0
GOAL_OVERHEAD = 0.10
WALL_MAX_PARAMS_M = 30.0  # the export-time goal covers every variant up to this size


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median": statistics.median(s), "p10": s[max(0, int(0.1 * len(s)) - 1)] if len(s) > 1 else s[0]}


def _time(fn, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return _percentiles(samples)


def latency(kind: str, path: Path | None, model, x, threads: int, runs: int, warmup: int, nhwc: bool = False):
    import torch

    if kind == "torch":
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return _time(lambda: model(x), runs, warmup)
        finally:
            torch.set_num_threads(old)
    xn = x.numpy()
    if kind == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return _time(lambda: sess.run(None, {name: xn}), runs, warmup)
    if kind == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        idx = it.get_input_details()[0]["index"]
        it.set_tensor(idx, np.ascontiguousarray(xn.transpose(0, 2, 3, 1)) if nhwc else xn)
        return _time(it.invoke, runs, warmup)
    raise ValueError(kind)


def bare_converters(model, x, tmp: Path) -> dict[str, float]:
    """The converter calls a user would make by hand, each timed on its own."""
    import coremltools as ct
    import litert_torch
    import torch

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    out = {}
    t0 = time.perf_counter()
    torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False).save(str(tmp / "bare.onnx"),
                                                                                      external_data=False)
    out["onnx"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    litert_torch.convert(model, (x,)).export(str(tmp / "bare.tflite"))
    out["tflite"] = time.perf_counter() - t0
    from edge.export.targets.coreml import _drop_aliases

    for fix in (False, True):
        t0 = time.perf_counter()
        try:
            ep = torch.export.export(model, (x,)).run_decompositions({})
            if fix:  # what edge does for GhostNet's whole-tensor slices (aten.alias), which coremltools rejects
                ep = _drop_aliases(ep)
            ct.convert(ep, inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
                       convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       skip_model_load=True).save(str(tmp / f"bare{int(fix)}.mlpackage"))
        except Exception as e:  # noqa: BLE001 - a bare call failing is itself a result
            out["coreml_bare_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            continue
        out["coreml"] = time.perf_counter() - t0
        break
    return out


def warm_up(tmp: Path) -> None:
    """Import every converter and run each once on a tiny network, so no model pays first-call costs."""
    import torch

    from edge._progress import Progress
    from edge.export import export

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    export(net, target="all", out=tmp / "warm", img_size=32, progress=Progress(quiet=True), strict=False)


def export_wall(name: str, out: Path) -> float:
    """Wall seconds of the command a user runs, `edge-export NAME --target all` (default --jobs), imports
    included."""
    import subprocess

    cli = Path(sys.executable).with_name("edge-export")
    t0 = time.perf_counter()
    subprocess.run([str(cli), name, "--target", "all", "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def small_variants() -> list[str]:
    from edge.models import complexity, list_models

    return [n for n in list_models() if complexity(n)["params"] / 1e6 <= WALL_MAX_PARAMS_M]


def wall_all(names: list[str], jsonl: Path, repeat: int = 1) -> None:
    """``--wall-only``: `--target all` wall time per variant, appended as each variant finishes.

    With ``repeat`` > 1 the variants take turns (every variant once, then again), so a slow spell of the machine
    (this VM's speed level moves every few seconds) is spread over all of them; the record keeps every wall and
    their median.
    """
    from edge._io import append_jsonl
    from edge.models import complexity

    walls: dict[str, list[float]] = {n: [] for n in names}
    load_before: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as td:
        warm_up(Path(td))
        date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        for turn in range(repeat):
            for name in names:
                load_before.setdefault(name, _load())
                with tempfile.TemporaryDirectory() as mtd:
                    walls[name].append(export_wall(name, Path(mtd)))
                if turn < repeat - 1:
                    continue
                rec = {"model": name, "params_m": complexity(name)["params"] / 1e6, "load_before": load_before[name],
                       "date": date, "all_wall_s": statistics.median(walls[name]), "all_walls_s": walls[name],
                       "load_after": _load()}
                append_jsonl(jsonl, rec)
                print(json.dumps(rec), flush=True)


def bench_model(name: str, runs: int, warmup: int, tmp: Path) -> dict:
    import torch

    from edge._progress import Progress
    from edge.export import export
    from edge.models import count_params, create, get_info

    info = get_info(name)
    rec: dict = {"model": name, "family": info.family, "load_before": _load()}
    out = tmp / "out"
    rec["all_wall_s"] = export_wall(name, tmp / "parallel")  # the default: TFLite beside ONNX and Core ML
    t0 = time.perf_counter()
    results = export(name, target="all", out=out, progress=Progress(quiet=True), strict=False, jobs=1)
    rec["all_wall_serial_s"] = time.perf_counter() - t0
    rec["stages"] = {r.target: r.manifest["stage_seconds"] for r in results}
    rec["passed"] = {r.target: r.passed for r in results}
    rec["layout"] = {r.target: r.manifest["ops"]["layout"] for r in results}
    rec["ops_total"] = {r.target: r.manifest["ops"]["total"] for r in results}
    artifacts = {r.target: r.artifact for r in results}
    (cl,) = export(name, target="tflite", out=tmp / "cl", channels_last=True, progress=Progress(quiet=True),
                   strict=False)
    rec["layout"]["tflite-channels-last"] = cl.manifest["ops"]["layout"]
    rec["stages"]["tflite-channels-last"] = cl.manifest["stage_seconds"]

    model = create(name, deploy=True)
    rec["params_m"] = count_params(model) / 1e6
    x = torch.randn(1, *info.input_size)
    rec["bare_s"] = bare_converters(model, x, tmp)

    first = results[0].manifest["stage_seconds"]
    shared = first.get("load", 0.0) + first.get("reference", 0.0)
    per_target = {t: sum(v for k, v in st.items() if k not in ("load", "reference")) for t, st in rec["stages"].items()
                  if t != "tflite-channels-last"}
    verify = sum(st.get("verify", 0.0) for t, st in rec["stages"].items() if t != "tflite-channels-last")
    pipeline = shared + sum(per_target.values())
    bare = sum(v for k, v in rec["bare_s"].items() if k in ("onnx", "tflite", "coreml"))
    build = first.get("load", 0.0)
    rec["overhead"] = {
        "pipeline_s": pipeline, "bare_s": bare, "build_s": build, "verify_s": verify,
        "with_check": (pipeline - build - bare) / bare,
        "without_check": (pipeline - build - verify - bare) / bare,
    }

    lat = {}
    for threads in (1, 2):
        lat[f"torch/{threads}"] = latency("torch", None, model, x, threads, runs, warmup)
        lat[f"onnx/{threads}"] = latency("onnx", artifacts["onnx"], model, x, threads, runs, warmup)
        lat[f"tflite/{threads}"] = latency("tflite", artifacts["tflite"], model, x, threads, runs, warmup)
        lat[f"tflite-nhwc/{threads}"] = latency("tflite", cl.artifact, model, x, threads, runs, warmup, nhwc=True)
    rec["latency_ms"] = lat
    rec["load_after"] = _load()
    return rec


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
                 .split()[1])
        mem = f", {kb / 1e6:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{cpu}, {os.cpu_count()} logical cores{mem}, {platform.system()} {platform.release()} "
            f"{platform.machine()}, Python {platform.python_version()}")


def write_doc(records: list[dict], doc: Path, command: str, started: str, runs: int,
              walls: list[dict] | None = None) -> None:
    import importlib.metadata as md

    tools = ", ".join(f"{d} {md.version(d)}" for d in ("torch", "litert-torch", "ai-edge-litert", "coremltools",
                                                        "onnxruntime", "onnxscript"))
    L = [
        "# Export benchmark",
        "",
        f"Generated {started} by `{command}`.",
        "",
        f"Machine: {machine()}. {tools}.",
        "",
        _load_sentence(records),
        "",
        "## Export time (`edge export MODEL --target all`, fp32, default input size)",
        "",
        "Stage seconds per target from an in-process `export(name, target=\"all\", jobs=1)` call after a warm-up "
        "(load = building the network incl. BatchNorm re-estimation; reference = PyTorch on the verification "
        "images; both are shared by the three targets), and its wall time. The goal applies to the last column: "
        "the command a user runs, `edge-export MODEL --target all`, timed from the shell (imports included) at "
        "the default `--jobs` (here 2: TFLite converts in a second process beside ONNX and Core ML, see "
        "`edge/export/side.py`).",
        "",
        "| model | params | load | reference | onnx trace+convert / verify | tflite convert / verify | "
        "coreml convert / verify | total, 1 process, warm | `edge-export --target all` | goal < 60 s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        st = r["stages"]
        first = st.get("onnx", {})

        def cv(t: str, st: dict = st) -> str:
            s = st.get(t, {})
            return f"{s.get('trace', 0) + s.get('convert', 0):.1f} / {s.get('verify', 0):.1f}"

        tot = r["all_wall_s"]
        serial = r.get("all_wall_serial_s")
        L.append(f"| {r['model']} | {r['params_m']:.1f}M | {first.get('load', 0):.1f} | "
                 f"{first.get('reference', 0):.1f} | {cv('onnx')} | {cv('tflite')} | {cv('coreml')} | "
                 f"{'-' if serial is None else f'{serial:.1f}'} | {tot:.1f} | {_goal(tot)} |")
    L += [
        "",
        "## Pipeline overhead over the bare converter calls",
        "",
        "Bare = `torch.onnx.export`+save, `litert_torch.convert`+export, `torch.export`+`coremltools.convert`+save on "
        "the same network, timed warm after the pipeline. Overhead = (pipeline - network build - bare) / bare. The "
        "numerics check is the pipeline's purpose, so it is shown both ways.",
        "",
        "| model | bare onnx / tflite / coreml (s) | pipeline excl. build (s) | of which verify | overhead incl. "
        "check | overhead excl. check | goal <= 10% |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in records:
        o, b = r["overhead"], r["bare_s"]
        ov = o["without_check"]
        goal = "; ".join(
            f"{how}: " + ("met" if v <= GOAL_OVERHEAD else f"missed by {100 * (v - GOAL_OVERHEAD):.0f} points")
            for how, v in (("excl. check", ov), ("incl. check", o["with_check"])))
        if b.get("coreml_bare_error"):
            notes.append(f"- {r['model']}: the bare Core ML call fails ({b['coreml_bare_error']}); timed with edge's "
                         "alias removal applied, as the pipeline does.")
        L.append(f"| {r['model']} | {b['onnx']:.1f} / {b['tflite']:.1f} / {b.get('coreml', float('nan')):.1f} | "
                 f"{o['pipeline_s'] - o['build_s']:.1f} | {o['verify_s']:.1f} | {100 * o['with_check']:+.0f}% | "
                 f"{100 * ov:+.0f}% | {goal} |")
    if notes:
        L += [""] + notes
    L += [
        "",
        f"## Host latency (ms, median / p10 of {runs} runs, batch 1)",
        "",
        "PyTorch eager runs the same deploy-form network. tflite-nhwc is the `--channels-last` artifact. "
        "Ratio = artifact median / PyTorch median at the same thread count (goal: <= 1.0 for every artifact).",
        "",
        "| model | threads | PyTorch | ONNX Runtime | LiteRT (NCHW) | LiteRT (NHWC) | worst ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lat = r["latency_ms"]
        for th in (1, 2):
            pt = lat[f"torch/{th}"]["median"]
            cells = []
            worst = 0.0
            for k in ("torch", "onnx", "tflite", "tflite-nhwc"):
                v = lat[f"{k}/{th}"]
                cells.append(f"{v['median']:.2f} / {v['p10']:.2f}")
                if k != "torch":
                    worst = max(worst, v["median"] / pt)
            L.append(f"| {r['model']} | {th} | " + " | ".join(cells) + f" | {worst:.2f} |")
    L += [
        "",
        "## Layout ops (TRANSPOSE / RESHAPE-like) in each artifact",
        "",
        "| model | onnx | tflite (NCHW input) | tflite --channels-last | coreml | all passed the gate |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lay = r["layout"]

        def tr(t: str, lay: dict = lay) -> str:
            v = lay.get(t)
            return "-" if not v else f"{v['transpose']} / {v['reshape']}"

        L.append(f"| {r['model']} | {tr('onnx')} | {tr('tflite')} | {tr('tflite-channels-last')} | {tr('coreml')} | "
                 f"{all(r['passed'].values())} |")
    if walls:
        L += [
            "",
            f"## Every variant up to {WALL_MAX_PARAMS_M:.0f}M parameters (`--target all`, fp32, default `--jobs`)",
            "",
            f"Measured {walls[0]['date']} by `python benchmarks/bench_export.py --wall-only`: wall seconds of "
            "`edge-export MODEL --target all` per variant, imports included, nothing else running.",
            "",
            "| model | params | total | goal < 60 s | load before -> after |",
            "|---|---|---|---|---|",
        ]
        for w in walls:
            each = w.get("all_walls_s", [w["all_wall_s"]])
            total = f"{w['all_wall_s']:.1f}" + (f" ({min(each):.1f}-{max(each):.1f}, {len(each)} runs)"
                                                if len(each) > 1 else "")
            L.append(f"| {w['model']} | {w['params_m']:.1f}M | {total} | {_goal(w['all_wall_s'])} | "
                     f"{w['load_before']} -> {w['load_after']} |")
    L += ["", "## Load average while measuring (1 / 5 / 15 min)", "", "| model | before | after |", "|---|---|---|"]
    for r in records:
        L.append(f"| {r['model']} | {r['load_before']} | {r['load_after']} |")
    from edge._io import write_text

    write_text(doc, "\n".join(L) + "\n")


def _goal(seconds: float) -> str:
    return "met" if seconds < GOAL_ALL_S else f"missed by {seconds - GOAL_ALL_S:.0f} s ({seconds / GOAL_ALL_S:.1f}x)"


def _load_sentence(records: list[dict]) -> str:
    """Say how busy the machine was: the 1-minute load average against the core count."""
    def one_minute(load: str) -> float:  # "a / b / c" as _load() writes it; "?" where unknown
        try:
            return float(load.split("/")[0])
        except ValueError:
            return 0.0

    peak = max((one_minute(r[k]) for r in records for k in ("load_before", "load_after")), default=0.0)
    cores = os.cpu_count() or 1
    if peak > cores:
        return (f"**The machine was shared with other jobs** (1-minute load up to {peak:.1f} on {cores} cores; per "
                "model in the last table). Wall times are upper bounds; rerun on a quiet machine for clean numbers.")
    return (f"Nothing else ran (1-minute load at most {peak:.1f} on {cores} cores, the benchmark itself included; per "
            "model in the last table).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help=f"variants (default: {' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default="out/bench")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "export-bench.md"))
    ap.add_argument("--render", metavar="STARTED", help="rewrite the doc from the latest record per model in "
                    "OUT/bench.jsonl (STARTED: the run's start time as the doc should show it); measure nothing")
    ap.add_argument("--wall-only", action="store_true", help=f"time `--target all` alone for every variant up to "
                    f"{WALL_MAX_PARAMS_M:.0f}M parameters (or --models), append to OUT/walls.jsonl and add the "
                    "table to the doc (rendered with --render's STARTED)")
    ap.add_argument("--repeat", type=int, default=1, help="--wall-only: time each variant this many times, the "
                    "variants taking turns; the table shows the median and the range")
    args = ap.parse_args(argv)
    from edge._io import append_jsonl, read_jsonl
    from edge.models import get_info, list_models

    names = args.models or [n for n in DEFAULT_MODELS if n in list_models()]
    for n in names:
        get_info(n)  # an unknown name fails before anything is measured
    out = Path(args.out)
    if args.wall_only:
        out.mkdir(parents=True, exist_ok=True)
        wall_all(args.models or small_variants(), out / "walls.jsonl", args.repeat)
    if args.render or args.wall_only:
        latest = {r["model"]: r for r in read_jsonl(out / "bench.jsonl")} if (out / "bench.jsonl").exists() else {}
        if not latest:  # the doc's other tables come from these records: rewriting it now would drop them
            print(f"{out / 'bench.jsonl'} has no records: {args.doc} left as it is (walls are in "
                  f"{out / 'walls.jsonl'}); run without --wall-only first, or point --out at an earlier run")
            return 0 if args.wall_only else 1
        walls = {w["model"]: w for w in read_jsonl(out / "walls.jsonl")} if (out / "walls.jsonl").exists() else {}
        names = [n for n in DEFAULT_MODELS if n in latest] if args.wall_only else names
        write_doc([latest[n] for n in names if n in latest], Path(args.doc), "python benchmarks/bench_export.py",
                  args.render or "(see the record dates)", args.runs, list(walls.values()))
        print(f"wrote {args.doc}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    records = []
    with tempfile.TemporaryDirectory() as td:
        warm_up(Path(td))
        for name in names:
            with tempfile.TemporaryDirectory() as mtd:
                rec = bench_model(name, args.runs, args.warmup, Path(mtd))
            append_jsonl(out / "bench.jsonl", rec)
            records.append(rec)
            print(json.dumps({k: rec[k] for k in ("model", "all_wall_s", "overhead")}, default=str), flush=True)
    command = "python benchmarks/bench_export.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_doc(records, Path(args.doc), command.strip(), started, args.runs)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

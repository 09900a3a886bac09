"""The coverage matrix: every zoo variant × {coreml, tflite, onnx} × {fp32, fp16} through the numerics gate.

    .venv/bin/python scripts/export_matrix.py                     # everything -> docs/matrix.md
    .venv/bin/python scripts/export_matrix.py --subset            # one variant per family (what CI runs)
    .venv/bin/python scripts/export_matrix.py --models ghostnet-1.0x --precisions fp32

Each model runs in its own subprocess (a crash or a leak in one converter cannot take the others down); inside
it, each target and precision is exported separately through ``edge.export.export`` so one rejected target does
not hide the rest. Every finished cell is appended to ``OUT/matrix.jsonl`` at once (a killed run keeps what it
did, and ``--resume`` redoes only the cells that did not pass); the markdown table is rewritten from that file
at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("onnx", "tflite", "coreml")


def worker(name: str, precisions: list[str], targets: list[str], out: Path, jsonl: Path, img_size: int | None) -> None:
    """Export one model to every (target, precision) in this process; append one record per cell."""
    from edge._io import append_jsonl, read_jsonl
    from edge._progress import Progress
    from edge.errors import EdgeError
    from edge.export import export

    passed = {(r["model"], r["target"], r["precision"]) for r in read_jsonl(jsonl) if r["status"] == "ok"}
    for precision in precisions:
        for target in targets:
            if (name, target, precision) in passed:
                continue
            t0 = time.perf_counter()
            rec = {"model": name, "target": target, "precision": precision}
            try:
                (r,) = export(name, target=target, precision=precision, out=out, img_size=img_size, strict=False,
                              progress=Progress(quiet=True))
                m = r.manifest
                o = next(iter(m["numerics"]["outputs"].values()), {})
                rec.update(
                    status=m["status"], sqnr_db=o.get("sqnr_db"), cosine=o.get("cosine"), top1=o.get("top1_agree"),
                    max_rel=o.get("max_rel"), ops=m["ops"]["total"], transpose=m["ops"]["layout"]["transpose"],
                    reshape=m["ops"]["layout"]["reshape"], size_mb=round(m["artifact"]["size_bytes"] / 1e6, 2),
                    runtime=m["numerics"]["runtime"], stages=m["stage_seconds"],
                    failures=m["numerics"]["failures"],
                )
            except EdgeError as e:
                rec.update(status="error", error=str(e))
            except Exception as e:  # noqa: BLE001 - recorded as a bug in the table, the matrix goes on
                rec.update(status="crash", error=f"{type(e).__name__}: {e}"[:500])
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            append_jsonl(jsonl, rec)
            print(f"{name:24s} {target:7s} {precision:5s} {rec['status']:16s} {rec['seconds']:6.1f}s", flush=True)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for d in ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "coremltools", "onnx", "onnxscript",
              "onnxruntime", "numpy"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = "-"
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}, " \
           f"Python {platform.python_version()}"


def write_markdown(records: list[dict], doc: Path, command: str, started: str, wall_s: float) -> None:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    cells = {(r["model"], r["precision"], r["target"]): r for r in records}
    from edge.models import list_models

    zoo = {name: i for i, name in enumerate(list_models())}  # zoo order, however the cells were (re)measured
    models = sorted(dict.fromkeys(r["model"] for r in records), key=lambda m: (zoo.get(m, len(zoo)), m))
    precisions = list(dict.fromkeys(r["precision"] for r in records))
    ok = sum(r["status"] == "ok" for r in records)
    lines = [
        "# Export coverage matrix",
        "",
        f"Generated {started} by `{command}` ({wall_s / 60:.0f} min wall).",
        "",
        f"Machine: {machine()}. Tool versions: "
        + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "",
        f"**{ok} of {len(records)} cells pass the numerics gate.** Each cell is one artifact run in its real runtime "
        "(ONNX Runtime, the LiteRT interpreter, edge's MIL interpreter for Core ML on Linux) on the fixed verification "
        "set, against the PyTorch network; limits per precision are in `edge/export/numerics.py`.",
        "Columns: output SQNR (dB) / top-1 agreement; ops = operators in the artifact (TRANSPOSE / RESHAPE-like "
        "counted as T/R); size in MB; s = wall seconds for the cell on this shared machine.",
        "",
        "| model | precision | " + " | ".join(TARGETS) + " |",
        "|---|---|" + "---|" * len(TARGETS),
    ]
    for m in models:
        for p in precisions:
            row = [m, p]
            for t in TARGETS:
                r = cells.get((m, p, t))
                if r is None:
                    row.append("not run")
                elif r["status"] in ("ok", "failed-numerics"):
                    mark = "ok" if r["status"] == "ok" else "**FAIL**"
                    row.append(f"{mark} {f(r.get('sqnr_db'), '.1f')} dB / {f(r.get('top1'), '.0%')}; "
                               f"{r.get('ops')} ops ({r.get('transpose')}T/{r.get('reshape')}R); "
                               f"{r.get('size_mb')} MB; {r['seconds']:.0f}s")
                else:
                    row.append(f"**{r['status'].upper()}**: {r.get('error', '')[:160]}")
            lines.append("| " + " | ".join(row) + " |")
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        lines += ["", "## Failures", ""]
        for r in bad:
            why = r.get("error") or json.dumps(r.get("failures"))
            lines.append(f"- {r['model']} {r['target']}-{r['precision']}: {r['status']}: {why}")
    doc.parent.mkdir(parents=True, exist_ok=True)
    from edge._io import write_text

    write_text(doc, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help="variants (default: every zoo variant)")
    ap.add_argument("--subset", action="store_true", help="one variant per family (CI's subset)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16"])
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--img-size", type=int, help="override every model's input size (default: each model's own)")
    ap.add_argument("--out", default="out/matrix", help="export root (artifacts + matrix.jsonl)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "matrix.md"))
    ap.add_argument("--resume", action="store_true", help="keep OUT/matrix.jsonl; redo only cells that did not pass")
    ap.add_argument("--report-only", action="store_true", help="rewrite the table from OUT/matrix.jsonl, run nothing")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = Path(args.out)
    jsonl = out / "matrix.jsonl"
    if args.worker:
        worker(args.worker, args.precisions, args.targets, out, jsonl, args.img_size)
        return 0

    from edge._io import read_jsonl
    from edge.models import get_info, list_models

    names = args.models or list_models()
    if args.subset:
        fams: dict[str, str] = {}
        for n in names:
            fams.setdefault(get_info(n).family, n)
        names = list(fams.values())
    if args.report_only:
        names = []
    elif not args.resume and jsonl.exists():
        jsonl.unlink()
    done = {(r["model"], r["target"], r["precision"]) for r in read_jsonl(jsonl) if r["status"] == "ok"}
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    for name in names:
        todo_p = [p for p in args.precisions if any((name, t, p) not in done for t in args.targets)]
        if not todo_p:
            continue
        cmd = [sys.executable, __file__, "--worker", name, "--out", str(out), "--precisions", *todo_p,
               "--targets", *args.targets]
        if args.img_size:
            cmd += ["--img-size", str(args.img_size)]
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc != 0:
            from edge._io import append_jsonl

            finished = {(r["model"], r["target"], r["precision"]) for r in read_jsonl(jsonl)}
            for p in todo_p:
                for t in args.targets:
                    if (name, t, p) not in finished:
                        append_jsonl(jsonl, {"model": name, "target": t, "precision": p, "status": "crash",
                                             "error": f"worker process exited with {rc}", "seconds": 0.0})
    latest = {(r["model"], r["target"], r["precision"]): r for r in read_jsonl(jsonl)}  # a rerun replaces a cell
    records = list(latest.values())
    command = "python scripts/export_matrix.py " + " ".join(a for a in (argv or sys.argv[1:]))
    write_markdown(records, Path(args.doc), command.strip(), started, time.perf_counter() - t0)
    print(f"wrote {args.doc}: {sum(r['status'] == 'ok' for r in records)}/{len(records)} ok")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

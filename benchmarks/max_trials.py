"""Would a higher `--max-trials` narrow edge-bench's CI? The 95% CI after the first k trials of long runs.

    python benchmarks/max_trials.py MODEL.tflite [MODEL.tflite ...] [--trials 100] [--out FILE.md]
    python benchmarks/max_trials.py --from DIR [DIR ...] [--out FILE.md]

Each model is benched on the host with edge-bench's defaults except a fixed trial count (``--trials``), or
``--from`` reads the newest run in each DIR/trials.jsonl that edge-bench already wrote. For k = 10, 20, 30, ...
the CI half-width (% of the median) is computed from the first k trials exactly as `--trials auto` sees it after
trial k, together with the first k >= 10 at which auto would have stopped at the 2% target. If the device's speed
were a fixed mixture of levels, the interval would narrow as 1/sqrt(k); a speed that drifts over minutes widens it
again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge._io import write_text  # noqa: E402
from edge.devices.bench import AUTO_MIN_TRIALS, TARGET_CI_PCT  # noqa: E402
from edge.devices.results import TRIALS_FILE, find_resumable, identity_key, load_trials, summarize  # noqa: E402

CHECKPOINTS = (10, 20, 30, 50, 75, 100)


def newest_run(folder: Path) -> list[dict]:
    """The trials of the last run in the folder, as `--resume` would find them."""
    trials = load_trials(folder)
    if not trials:
        raise SystemExit(f"no trials in {folder / TRIALS_FILE}")
    return find_resumable(folder, identity_key(trials[-1]))[1]


def ci_pct(trials: list[dict]) -> float:
    return summarize(trials, requested=len(trials), rule=None)["ci95_half_width_pct"]


def row(name: str, trials: list[dict]) -> dict:
    cis = {k: ci_pct(trials[:k]) for k in range(AUTO_MIN_TRIALS, len(trials) + 1)}
    curve = {k: cis[k] for k in CHECKPOINTS if k in cis}
    stop = next((k for k, ci in cis.items() if ci <= TARGET_CI_PCT), None)
    medians = [t["latency_ms"]["median"] for t in trials]
    return {"name": name, "trials": len(trials), "curve": curve, "stop": stop, "lo": min(medians),
            "hi": max(medians), "first": trials[0]["timestamp"], "last": trials[-1]["timestamp"],
            "min_seconds": trials[0].get("min_seconds")}


def render(rows: list[dict], how: str, note: str | None = None) -> str:
    head = " | ".join(f"CI ±% after {k}" for k in CHECKPOINTS)
    lines = [
        "# Would more trials narrow edge-bench's CI?",
        "",
        f"Written by `benchmarks/max_trials.py` ({how}). Host, LiteRT + XNNPACK, 1 thread, edge-bench's defaults",
        "except the trial count. Each column is the 95% CI half-width, as % of the median, computed from the first k",
        f"trials exactly as `--trials auto` sees it after trial k; **auto stops at** is the first k >= "
        f"{AUTO_MIN_TRIALS} with a CI within {TARGET_CI_PCT:g}%.",
        "",
        f"| file | trials | min s per trial | {head} | auto stops at | trial medians ms | measured (UTC) |",
        "|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['curve'][k]:.2f}" if k in r["curve"] else "-" for k in CHECKPOINTS)
        lines.append(f"| {r['name']} | {r['trials']} | {r['min_seconds']} | {cells} | {r['stop'] or '-'} | "
                     f"{r['lo']:.2f}-{r['hi']:.2f} | {r['first'][11:16]}-{r['last'][11:16]} |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help=".tflite / .onnx files or export folders to bench")
    ap.add_argument("--from", dest="folders", nargs="+", metavar="DIR", help="edge-bench output folders to read")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--out", help="write the markdown here (default: print it)")
    ap.add_argument("--note", help="a paragraph to add under the table (where the --from runs came from)")
    a = ap.parse_args()
    if bool(a.models) == bool(a.folders):
        ap.error("give model files or --from folders, not both")
    rows = []
    if a.folders:
        for f in a.folders:
            rows.append(row(Path(f).name, newest_run(Path(f))))
        how = "`--from` " + " ".join(f"`{Path(f).name}`" for f in a.folders)
    else:
        from edge._progress import Progress
        from edge.devices import bench

        work = Path(tempfile.mkdtemp(prefix="max-trials-"))
        for i, m in enumerate(a.models):
            out = work / str(i)
            bench(m, "host", trials=a.trials, out=out, progress=Progress(quiet=True))
            rows.append(row(str(m), newest_run(out)))
        how = f"{a.trials} trials per file, run {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d')}"
    text = render(rows, how, a.note)
    if a.out:
        write_text(Path(a.out), text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

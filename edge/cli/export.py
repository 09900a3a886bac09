"""`edge export` / `edge-export`: one command from a PyTorch network to checked Core ML, TFLite and ONNX files.

Only parses and prints; the work is :func:`edge.export.export` with the same arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "convert a zoo model or your own network to coreml / tflite / onnx, checked against PyTorch"

PRECISION_FLAGS = {"fp16": "--fp16", "int8": "--int8", "int8w": "--int8-weights", "w8a16": "--int16-activations",
                   "int8dyn": "--int8-dynamic"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="zoo name (see `edge models`) or path/to/file.py:factory")
    p.add_argument("--target", default="all", help="coreml, tflite, onnx, a comma list, or all (default: all)")
    prec = p.add_argument_group("precision (default fp32)")
    prec.add_argument("--fp16", action="store_true", help="float16 weights (Core ML / ONNX: float16 compute)")
    prec.add_argument("--int8", action="store_true", help="W8A8 static: int8 weights and calibrated int8 activations")
    prec.add_argument("--int8-weights", action="store_true", help="weight-only int8, float compute")
    prec.add_argument("--int16-activations", action="store_true", help="W8A16: int8 weights, int16 activations")
    prec.add_argument("--int8-dynamic", action="store_true", help="dynamic-range int8 (activations at run time)")
    prec.add_argument("--precision", choices=("fp32", "fp16", "int8", "int8w", "w8a16", "int8dyn"),
                      help="the same choice by name")
    p.add_argument("--checkpoint", metavar="PATH", help="weights (.safetensors / .pth) in edge's, timm's or the "
                                                        "official layout")
    p.add_argument("--img-size", type=int, metavar="N", help="input height = width (default: the model's)")
    p.add_argument("--out", default="out", metavar="DIR", help="output root; writes DIR/<model>/<target>-<precision>/")
    p.add_argument("--name", help="folder name for a file.py:factory network (default: the factory's name)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a zoo family option (repeatable); values are read as JSON when they parse")
    from edge.export.targets.onnx import DEFAULT_OPSET  # numpy only: keeps `edge --help` fast

    p.add_argument("--opset", type=int, metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--channels-last", action="store_true", help="NHWC input (and NHWC spatial outputs)")
    p.add_argument("--image-input", action="store_true", help="Core ML: image input with mean/std folded in")
    p.add_argument("--class-labels", metavar="FILE", help="text file, one class label per line (Core ML metadata)")
    p.add_argument("--json", action="store_true", help="print the results (manifests included) as JSON")
    p.add_argument("--jobs", type=int, metavar="N", help="processes converting at once (default: the usable cores; "
                   "with 2+, TFLite converts beside ONNX and Core ML); 1 converts one target after another")
    q = p.add_argument_group("quantization (integer precisions)")
    q.add_argument("--calib", metavar="DIR", help="calibration images (JPEG/PNG, searched recursively); default: "
                                                  "edge's built-in natural photos")
    q.add_argument("--calib-samples", type=int, default=32, metavar="N", help="calibration images to use (32)")
    q.add_argument("--calib-method", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="activation range estimator (minmax)")
    q.add_argument("--keep-float", nargs="+", default=[], metavar="LAYER", help="layers to keep in float")
    q.add_argument("--auto-mixed", type=int, default=0, metavar="N", help="keep the N most sensitive layers in float")
    q.add_argument("--float-io", action="store_true", help="TFLite int8: keep float inputs and outputs")
    q.add_argument("--engine", default="auto", choices=("auto", "aeq", "pt2e"),
                   help="TFLite int8 (W8A8): ai-edge-quantizer (aeq) or litert-torch PT2E (default: auto, the "
                        "measured choice per family)")
    q.add_argument("--eval", metavar="DIR", help="ImageFolder set: report top-1 of fp32 and the quantized artifact")


def precision_of(args: argparse.Namespace) -> str:
    from edge.errors import EdgeError

    flags = {name for name, flag in PRECISION_FLAGS.items() if getattr(args, flag[2:].replace("-", "_"))}
    if {"int8", "w8a16"} <= flags:
        flags.discard("int8")  # --int8 --int16-activations is W8A16
    if len(flags) > 1:
        raise EdgeError(f"{' and '.join(PRECISION_FLAGS[f] for f in sorted(flags))} cannot be combined",
                        "export one precision per command")
    chosen = next(iter(flags), None)
    if args.precision and chosen and args.precision != chosen:
        raise EdgeError(f"--precision {args.precision} contradicts {PRECISION_FLAGS[chosen]}", "give only one")
    return args.precision or chosen or "fp32"


def parse_options(items: list[str]) -> dict[str, Any]:
    from edge.errors import EdgeError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EdgeError(f"--option {item!r} is not KEY=VALUE", "e.g. --option drop_rate=0.0")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def read_labels(path: str | None) -> list[str] | None:
    from edge.errors import EdgeError

    if path is None:
        return None
    p = Path(path)
    try:
        labels = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"class-labels file {path!r} cannot be read: {e}",
                        "give a UTF-8 text file, one label per line") from None
    if not labels:
        raise EdgeError(f"class-labels file {path!r} has no labels", "one label per line")
    return labels


def run(args: argparse.Namespace) -> int:
    from edge._progress import Progress
    from edge.errors import EdgeError
    from edge.export import QuantOptions, export

    quant = QuantOptions(
        calib_dir=Path(args.calib) if args.calib else None,
        calib_samples=args.calib_samples,
        calib_method=args.calib_method,
        keep_float=tuple(args.keep_float),
        auto_mixed=args.auto_mixed,
        float_io=args.float_io,
        engine=args.engine,
        eval_dir=Path(args.eval) if args.eval else None,
    )
    try:
        results = export(
            args.model, target=args.target, precision=precision_of(args), out=args.out,
            checkpoint=args.checkpoint, img_size=args.img_size, name=args.name, options=parse_options(args.option),
            opset=args.opset, channels_last=args.channels_last, image_input=args.image_input,
            class_labels=read_labels(args.class_labels), quant=quant, progress=Progress(),
            verbose=bool(getattr(args, "debug", False)), jobs=args.jobs,
        )
    except EdgeError as e:  # a gate breach or a rejected target: show what was written, then the error
        if getattr(e, "results", None):
            _print(e.results, args.json)  # type: ignore[attr-defined]
        raise
    _print(results, args.json)
    return 0


def _print(results: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"path": str(r.path), "artifact": str(r.artifact), "passed": r.passed,
                           "manifest": r.manifest} for r in results], indent=2))
        return
    for r in results:
        print(r.summary())

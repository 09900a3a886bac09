"""One pipeline for every target: load → reference → trace → convert → (quantize) → verify → write.

Each artifact is built in a temporary folder beside ``OUT/<model>/<target>-<precision>/`` and renamed into place
only when complete, so an error, a crash or Ctrl-C never leaves a half-written export. An artifact that fails
the numerics gate is still written (for inspection) but marked ``"status": "failed-numerics"``, and the call
raises :class:`~edge.errors.NumericsError` once every requested target has been tried.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge import _interrupt as interrupt
from edge._io import atomic_path, path_size, sha256_path, write_json
from edge._progress import Progress
from edge._threads import torch_threads
from edge.errors import EdgeError, NumericsError
from edge.export import numerics, side
from edge.export.context import (
    PRECISIONS,
    QUANT_PRECISIONS,
    TARGET_NAMES,
    ExportContext,
    ExportOptions,
    QuantOptions,
    deploy_arithmetic,
)
from edge.export.loader import LoadedModel, check_img_size, load, precheck, probe
from edge.export.manifest import MANIFEST
from edge.export.manifest import build as build_manifest
from edge.export.targets import TARGETS
from edge.export.targets.base import ConversionError, Target, explain_conversion_failure

DEPLOY_CHECK_SAMPLES = 2

# Order of `--target all`: fastest first, so a broken network fails early.
ALL_ORDER = ("onnx", "tflite", "coreml")


@dataclass
class ExportResult:
    """One artifact: its folder, the artifact inside it, the manifest written, and whether it passed the gate."""

    path: Path
    artifact: Path
    manifest: dict[str, Any]
    passed: bool

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    def summary(self) -> str:
        m = self.manifest
        worst = _worst(m["numerics"])
        lay = m["ops"]["layout"]
        status = "ok" if self.passed else "FAILED numerics"
        size = m["artifact"]["size_bytes"] / 1e6
        return (f"{m['target']}-{m['precision']}: {status}  {self.artifact}  {size:.2f} MB  "
                f"{m['ops']['total']} ops ({lay['transpose']} transpose, {lay['reshape']} reshape)  {worst}")


def _worst(num: dict[str, Any]) -> str:
    outs = num.get("outputs") or {}
    if not outs:
        return ""
    parts = []
    for name, m in outs.items():
        s = f"{name}: SQNR {m['sqnr_db']:.1f} dB, cos {m['cosine']:.6f}" if m.get("sqnr_db") is not None else name
        if m.get("top1_agree") is not None:
            s += f", top-1 {m['top1_agree']:.0%}"
        parts.append(s)
    return "; ".join(parts)


def resolve_targets(target: str | Sequence[str]) -> list[str]:
    names = [target] if isinstance(target, str) else list(target)
    out: list[str] = []
    for n in names:
        for part in str(n).split(","):
            part = part.strip().lower()
            if part == "all":
                out.extend(t for t in ALL_ORDER if t not in out)
            elif part in TARGETS:
                if part not in out:
                    out.append(part)
            else:
                raise EdgeError(f"unknown target {part!r}", f"choose from {', '.join(TARGET_NAMES)} or all")
    if not out:
        raise EdgeError("no target given", f"choose from {', '.join(TARGET_NAMES)} or all")
    return out


def _check_precision(precision: str, targets: list[str]) -> None:
    if precision not in PRECISIONS:
        raise EdgeError(f"unknown precision {precision!r}", f"choose from {', '.join(PRECISIONS)}")
    if precision in QUANT_PRECISIONS:
        try:
            q = importlib.import_module("edge.export.quantize")
        except ImportError as e:
            raise EdgeError(f"{precision} export needs edge.export.quantize, which is not available: {e}",
                            "export fp32 or fp16, or reinstall edge") from None
        for t in targets:
            q.check_mode(t, precision)


# ------------------------------------------------------------------------------------------- output folders


class _OutDirs:
    """Creates OUT/<model>/ and removes the folders it created if nothing ends up in them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created: list[Path] = []

    def ensure(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
        if p.exists() and not p.is_dir():
            raise EdgeError(f"output folder {str(path)!r} cannot be written: {str(p)!r} is a file",
                            "choose another --out")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe_file = tempfile.mkstemp(prefix=".edge-write-test.", dir=path)
            os.close(fd)
            os.unlink(probe_file)
        except OSError as e:
            self.created.extend(reversed(missing))
            self.cleanup()
            raise EdgeError(f"output folder {str(path)!r} cannot be written: {e.strerror or e}",
                            "choose another --out or fix its permissions") from None
        self.created.extend(reversed(missing))

    def cleanup(self) -> None:
        for p in reversed(self.created):
            with contextlib.suppress(OSError):
                p.rmdir()  # only removes empty folders


@contextlib.contextmanager
def native_output_captured(enabled: bool) -> Iterator[None]:
    """Converters print progress bars and C++ logs straight to fd 1/2; keep them out of the user's terminal
    (``--debug`` shows them)."""
    if not enabled:
        yield
        return
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    saved = [os.dup(1), os.dup(2)]
    sink = tempfile.TemporaryFile()
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sink.close()


# ------------------------------------------------------------------------------------------------ export


def export(
    model_or_name: str | torch.nn.Module,
    target: str | Sequence[str] = "all",
    precision: str = "fp32",
    out: str | os.PathLike[str] = "out",
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    img_size: int | None = None,
    name: str | None = None,
    options: dict[str, Any] | None = None,
    opset: int | None = None,
    channels_last: bool = False,
    image_input: bool = False,
    class_labels: Sequence[str] | None = None,
    quant: QuantOptions | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    strict: bool = True,
    verbose: bool = False,
    jobs: int | None = None,
) -> list[ExportResult]:
    """Export a zoo name, ``path/file.py:factory`` or an ``nn.Module`` to one or more targets.

    Returns one :class:`ExportResult` per target. With ``strict`` (default) an artifact that fails the numerics
    gate raises :class:`NumericsError` after all targets were written (the error's ``results`` holds them);
    ``strict=False`` returns them with ``passed=False`` instead. ``verbose`` lets converter output through.
    ``jobs`` caps the processes converting at once (default: the cores this process may use; 1 converts every
    target here, one after another); see :mod:`edge.export.side`.
    """
    t_start = time.perf_counter()
    progress = progress or Progress()
    targets = resolve_targets(target)
    _check_precision(precision, targets)
    if opset is not None:
        _check_opset(int(opset))
    export_options = ExportOptions(opset=opset, channels_last=channels_last, image_input=image_input,
                                   class_labels=list(class_labels) if class_labels else None,
                                   quant=quant or QuantOptions())
    if image_input and "coreml" not in targets:
        raise EdgeError("--image-input applies to Core ML only", "add --target coreml (or all)")
    if export_options.quant.engine != "auto" and "tflite" not in targets:
        raise EdgeError(f"--engine {export_options.quant.engine} applies to TFLite only",
                        "add --target tflite (or all), or drop --engine")
    if image_input and channels_last:
        raise EdgeError("--image-input and --channels-last cannot be combined",
                        "an image input has no tensor layout; export the channels-last targets separately")
    if class_labels is not None and not list(class_labels):
        raise EdgeError("the class-labels list is empty", "give one label per line")
    if jobs is not None and jobs < 1:
        raise EdgeError(f"--jobs {jobs} must be at least 1", "1 converts one target after another")

    precheck(model_or_name, img_size)
    out = Path(out)
    dirs = _OutDirs(out)
    dirs.ensure(out)
    here, side_groups = side.plan(model_or_name, targets, jobs, shares_program=not channels_last)
    job = {"model_or_name": model_or_name, "precision": precision, "out": out, "checkpoint": checkpoint,
           "img_size": img_size, "name": name, "options": options, "export_options": export_options, "seed": seed,
           "verbose": verbose, "report_rejections": len(targets) > 1}
    sides: list[side.SideExport] = []
    threads = side.threads_each(1 + len(side_groups))
    try:
        if side_groups:
            from edge.models import get_info

            dirs.ensure(out / get_info(str(model_or_name)).name)  # made here, so this process removes it if unused
            sides = [side.SideExport(g, {**job, "quiet": progress.quiet}, threads) for g in side_groups]
        with torch_threads(threads) if sides else contextlib.nullcontext():
            model_name, results, rejected = run_targets(targets=here, progress=progress, dirs=dirs, **job)
        for s in sides:
            got, refused = s.result()
            results += got
            rejected += refused
    except BaseException:
        for s in sides:
            s.stop()
        dirs.cleanup()
        raise
    results.sort(key=lambda r: targets.index(r.target))
    if rejected:
        dirs.cleanup()
        if len(targets) == 1:
            raise rejected[0]
        first = rejected[0]
        done = ", ".join(f"{r.target}-{r.precision}" for r in results) or "none"
        err = ConversionError(f"{first.message} (written: {done})", first.hint, op=getattr(first, "op", None),
                              module_path=getattr(first, "module_path", None), target=getattr(first, "target", None))
        err.results = results  # type: ignore[attr-defined]
        err.errors = rejected  # type: ignore[attr-defined]
        raise err
    failed = [r for r in results if not r.passed]
    progress.info(f"done in {time.perf_counter() - t_start:.1f}s")
    if failed and strict:
        msg = "; ".join(f"{r.target}-{r.precision}: {numerics.describe_failures(r.manifest['numerics']['failures'])}"
                        for r in failed)
        err = NumericsError(
            f"{len(failed)} artifact(s) of {model_name} failed the numerics gate: {msg}",
            f"kept and marked failed in their manifest.json ({', '.join(str(r.path) for r in failed)})",
        )
        err.results = results  # type: ignore[attr-defined]
        raise err
    return results


@interrupt.recorded()
def run_targets(model_or_name: str | torch.nn.Module, targets: Sequence[str], precision: str, out: Path, *,
                checkpoint: str | os.PathLike[str] | None, img_size: int | None, name: str | None,
                options: dict[str, Any] | None, export_options: ExportOptions, seed: int, progress: Progress,
                verbose: bool, report_rejections: bool, dirs: _OutDirs | None = None,
                ) -> tuple[str, list[ExportResult], list[EdgeError]]:
    """Load the network once and export it to ``targets`` in turn: (model name, results, rejected targets).

    A target the converter rejects is collected, not raised: the other targets are still worth having. ``dirs``
    records the folders made, for the caller to remove if nothing lands in them.
    """
    what = model_or_name if isinstance(model_or_name, str) else type(model_or_name).__name__
    t0 = time.perf_counter()
    with progress.stage("load", what):
        loaded = load(model_or_name, checkpoint=checkpoint, name=name, options=options, seed=seed)
    load_seconds = time.perf_counter() - t0
    img = int(img_size or loaded.default_img_size)
    check_img_size(loaded, img)
    (dirs or _OutDirs(out)).ensure(out / loaded.name)
    shared = _reference(loaded, img, precision, progress)
    shared["load_seconds"] = load_seconds
    results: list[ExportResult] = []
    rejected: list[EdgeError] = []
    for t in targets:
        try:
            results.append(_export_one(loaded, TARGETS[t], precision, img, out, export_options, shared, progress,
                                       verbose))
        except ConversionError as e:
            rejected.append(e)
            if report_rejections:
                progress.info(f"  {t}-{precision} not written: {e}")
    return loaded.name, results, rejected


def _check_opset(opset: int) -> None:
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    if not 18 <= opset <= newest:
        raise EdgeError(f"--opset {opset} is not available",
                        f"the dynamo ONNX exporter writes opsets 18 to {newest} with the installed onnx")


def reference_outputs(model: torch.nn.Module, inputs: torch.Tensor) -> list[np.ndarray]:
    """Outputs over the verification set: one batch, or one image at a time for batch-1-only networks."""
    with torch.no_grad():
        try:
            y = model(inputs)
            ys = list(y) if isinstance(y, (tuple, list)) else [y]
        except Exception:  # noqa: BLE001 - e.g. a reshape hard-coded to batch 1; the probe already ran batch 1
            per = [model(inputs[i:i + 1]) for i in range(inputs.shape[0])]
            per = [list(p) if isinstance(p, (tuple, list)) else [p] for p in per]
            ys = [torch.cat([p[k] for p in per]) for k in range(len(per[0]))]
    return [t.detach().float().numpy() for t in ys]


def _reference(loaded: LoadedModel, img: int, precision: str, progress: Progress) -> dict[str, Any]:
    """The verification set and the PyTorch outputs every artifact is compared with (shared by all targets)."""
    with progress.stage("reference", f"PyTorch on {numerics.VERIFY_SAMPLES[precision]} verification images"):
        t0 = time.perf_counter()
        n = numerics.VERIFY_SAMPLES[precision]
        inputs = numerics.verification_inputs(img, loaded.mean, loaded.std, loaded.crop_pct, loaded.interpolation, n)
        example = inputs[:1].clone()
        outs = probe(loaded, example)
        ref_list = reference_outputs(loaded.reference, inputs)
        names = _output_names(outs)
        return {
            "example": example,
            "inputs": inputs,
            "ref": ref_list,
            "output_names": names,
            "output_shapes": tuple(tuple(o.shape) for o in outs),
            "reference_seconds": time.perf_counter() - t0,
        }


def _deploy_check(loaded: LoadedModel, ctx: ExportContext, shared: dict[str, Any]) -> dict[str, Any]:
    """The deploy form (what is converted) against the network as built, on a few images: a diagnostic that tells a
    re-parameterization bug apart from a converter bug when an artifact fails. Once per deploy form."""
    key = f"deploy_check/{ctx.layout}/{ctx.arithmetic}"
    if key not in shared:
        k = min(DEPLOY_CHECK_SAMPLES, len(shared["inputs"]))
        dep_list = reference_outputs(loaded.deploy(ctx.layout, ctx.arithmetic), shared["inputs"][:k])
        shared[key] = {nm: numerics.compare(r[:k], d) for nm, r, d in zip(shared["output_names"], shared["ref"],
                                                                             dep_list)}
    return {"layout": ctx.layout, "arithmetic": ctx.arithmetic, "outputs": shared[key]}


def _output_names(outs: list[torch.Tensor]) -> tuple[str, ...]:
    if len(outs) == 1:
        return ("logits",) if outs[0].dim() == 2 else ("output",)
    return tuple(f"output_{i}" for i in range(len(outs)))


def _export_one(loaded: LoadedModel, target: Target, precision: str, img: int, out: Path, options: ExportOptions,
                shared: dict[str, Any], progress: Progress, verbose: bool) -> ExportResult:
    final = out / loaded.name / f"{target.name}-{precision}"
    label = f"{loaded.name} {target.name}-{precision}"
    stages: dict[str, float] = {}
    quantized = precision in QUANT_PRECISIONS
    with atomic_path(final) as tmp:
        tmp.mkdir()
        ctx = ExportContext(
            name=loaded.name, model=loaded.deploy(target.layout, deploy_arithmetic(precision)), layout=target.layout,
            info=loaded.info,
            example=shared["example"], img_size=img,
            target=target.name, precision=precision, workdir=tmp / ".float" if quantized else tmp, options=options,
            mean=tuple(loaded.mean), std=tuple(loaded.std), progress=progress,
            output_names=shared["output_names"], output_shapes=shared["output_shapes"], shared=shared,
        )
        ctx.workdir.mkdir(exist_ok=True)
        ctx.extras["checkpoint"] = loaded.checkpoint
        if target.name == "onnx":
            ctx.extras["opset"] = options.opset or _onnx_default_opset()
        if target.uses_exported_program and not options.channels_last and ctx.program_key not in shared:
            t0 = time.perf_counter()
            try:
                ctx.exported_program  # noqa: B018 - traced once, shared by the targets of this run
            except Exception as e:  # noqa: BLE001 - torch.export's own error, explained like a converter's
                raise explain_conversion_failure(e, "torch.export", ctx) from e
            stages["trace"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with progress.stage("convert", label), native_output_captured(not verbose):
            try:
                artifact = target.convert(ctx)
            except (EdgeError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - converter errors are explained, not dumped
                raise explain_conversion_failure(e, target.name, ctx) from e
        stages["convert"] = time.perf_counter() - t0
        interrupt.check()

        if quantized:
            q = importlib.import_module("edge.export.quantize")
            ctx.float_artifact = artifact
            ctx.workdir = tmp
            t0 = time.perf_counter()
            with progress.stage("quantize", label), native_output_captured(not verbose):
                artifact = q.quantize(ctx)
            stages["quantize"] = time.perf_counter() - t0
            shutil.rmtree(tmp / ".float", ignore_errors=True)
            ctx.float_artifact = None

        t0 = time.perf_counter()
        with progress.stage("verify", label), native_output_captured(not verbose):
            inputs, outputs = _io(target, artifact, ctx)
            io = {"inputs": inputs, "outputs": outputs, "preprocess": loaded.preprocess(img),
                  "image_input": ctx.extras.get("image_input")}
            report = check_artifact(target, artifact, io, precision, shared["inputs"], shared["ref"],
                                    shared["output_names"])
            report["deploy_form"] = _deploy_check(loaded, ctx, shared)
        stages["verify"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with progress.stage("write", label):
            histogram = target.op_histogram(artifact)
            sha = sha256_path(artifact)
            size = path_size(artifact)
            stages["write"] = time.perf_counter() - t0
            all_stages = {"load": shared["load_seconds"], "reference": shared["reference_seconds"], **stages}
            manifest = build_manifest(
                loaded=loaded, target=target, ctx=ctx, artifact=artifact, artifact_sha256=sha, size_bytes=size,
                inputs=inputs, outputs=outputs, histogram=histogram, numerics=report, stage_seconds=all_stages,
                tools=target.tool_versions(),
            )
            write_json(tmp / MANIFEST, manifest)
            interrupt.check()  # a Ctrl-C swallowed on the way must still keep this export from landing
    if not report["passed"]:
        progress.info(f"  {target.name}-{precision} FAILED the numerics gate: "
                      f"{numerics.describe_failures(report['failures'])}")
    return ExportResult(path=final, artifact=final / artifact.name, manifest=manifest, passed=bool(report["passed"]))


def _onnx_default_opset() -> int:
    from edge.export.targets.onnx import DEFAULT_OPSET

    return DEFAULT_OPSET


def _io(target: Target, artifact: Path, ctx: ExportContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The artifact's own I/O description, with layouts and any quantizer-provided I/O quantization added."""
    inputs, outputs = target.io_spec(artifact)
    for spec in inputs:
        if ctx.options.image_input and str(spec.get("dtype", "")).startswith("image"):
            spec["layout"] = "image"
        elif len(spec["shape"]) == 4:
            spec["layout"] = "NHWC" if ctx.options.channels_last else "NCHW"
        else:
            spec["layout"] = None
    for spec, shape in zip(outputs, ctx.output_shapes):
        if len(shape) == 2:
            spec["layout"] = "NC"
        elif len(shape) == 4:
            spec["layout"] = "NHWC" if ctx.options.channels_last else "NCHW"
        else:
            spec["layout"] = None
    ioq = ctx.extras.get("io_quantization") or {}
    for key, specs in (("inputs", inputs), ("outputs", outputs)):
        for spec, q in zip(specs, ioq.get(key) or []):
            if q:
                spec["quantization"] = {"scale": q["scale"], "zero_point": q["zero_point"]}
                if q.get("dtype"):
                    spec["dtype"] = q["dtype"]
    return inputs, outputs


def check_artifact(target: Target, artifact: Path, io: dict[str, Any], precision: str, inputs: torch.Tensor,
                   ref: list[np.ndarray], names: Sequence[str]) -> dict[str, Any]:
    """Run the artifact in its runtime(s) on the verification set and gate the result; never raises on a breach."""
    thresholds = numerics.THRESHOLDS[precision]
    report: dict[str, Any] = {"passed": False, "runtime": target.runtime_name(), "samples": int(inputs.shape[0]),
                              "seed": numerics.VERIFY_SEED, "thresholds": thresholds.as_dict(), "outputs": {},
                              "failures": []}
    try:
        runners = target.runners(artifact, io)
        by_runtime: dict[str, dict[str, Any]] = {}
        for runtime, run in runners:
            got: list[list[np.ndarray]] = [[] for _ in names]
            for i in range(inputs.shape[0]):
                ys = run(inputs[i:i + 1].numpy())
                if len(ys) != len(names):
                    raise EdgeError(f"{target.name} artifact returned {len(ys)} outputs, the network {len(names)}")
                for k, y in enumerate(ys):
                    got[k].append(np.asarray(y, dtype=np.float32).reshape(ref[k][i:i + 1].shape))
            by_runtime[runtime] = {nm: numerics.compare(r, np.concatenate(g)) for nm, r, g in zip(names, ref, got)}
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - an artifact that cannot be run has failed the gate, and says why
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, EdgeError) else str(e)
        report["failures"] = [{"output": "*", "metric": "unverifiable", "value": None, "limit": None, "error": msg}]
        report["error"] = msg
        return report
    runtimes = list(by_runtime)
    report["runtime"] = "+".join(runtimes)
    report["outputs"] = by_runtime[runtimes[0]]
    if len(runtimes) > 1:
        report["by_runtime"] = by_runtime
    failures = []
    for runtime, metrics in by_runtime.items():
        for f in numerics.gate(metrics, precision):
            failures.append({**f, "runtime": runtime} if len(runtimes) > 1 else f)
    report["failures"] = failures
    report["passed"] = not failures
    return report

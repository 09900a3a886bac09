"""The interface every target adapter implements, and what they share: converter-error explanations.

A target converts the network in ``ctx`` into one artifact file (or ``.mlpackage`` folder), runs an artifact
in its real runtime, and reads back the artifact's I/O and op histogram. Adding a target is one file that
looks like its siblings plus one line in ``targets/__init__.py``.
"""

from __future__ import annotations

import importlib.metadata
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import EdgeError

if TYPE_CHECKING:
    import torch

    from edge.export.context import ExportContext

Runner = Callable[[np.ndarray], list[np.ndarray]]


class Target(ABC):
    name: str
    artifact_name: str
    # op-type names (as the format spells them) counted as layout ops in the manifest
    transpose_ops: tuple[str, ...] = ()
    reshape_ops: tuple[str, ...] = ()
    # converts ``ctx.exported_program`` (made once per run and shared) rather than tracing the module itself
    uses_exported_program: bool = True
    # memory layout of the runtime's kernels: picks the deploy form's arrangement (edge.models.reparameterize_model)
    layout: str = "nchw"

    @abstractmethod
    def convert(self, ctx: ExportContext) -> Path:
        """Write the fp32 / fp16 artifact into ``ctx.workdir`` and return its path."""

    @abstractmethod
    def runner(self, artifact: Path, io: dict[str, Any]) -> Runner:
        """A callable running one float NCHW batch-1 input, returning float outputs (NCHW / NC order).

        ``io`` is the manifest's view of the artifact ("inputs", "outputs", "preprocess", "image_input"):
        integer I/O is quantized / dequantized with its "quantization", NHWC I/O is transposed.
        """

    @abstractmethod
    def op_histogram(self, artifact: Path) -> dict[str, int]:
        """Operator type -> count, over the whole graph."""

    @abstractmethod
    def io_spec(self, artifact: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Manifest "inputs" and "outputs" read back from the artifact itself."""

    def tool_versions(self) -> dict[str, str]:
        return versions("torch", "numpy")

    def runtime_name(self) -> str:
        """The name of the runtime :meth:`runner` uses, for the numerics report."""
        return self.name

    def runners(self, artifact: Path, io: dict[str, Any]) -> list[tuple[str, Runner]]:
        """Every runtime the artifact is gated in (more than one where a second real runtime exists)."""
        return [(self.runtime_name(), self.runner(artifact, io))]

    def layout_counts(self, histogram: dict[str, int]) -> dict[str, int]:
        return {
            "transpose": sum(histogram.get(k, 0) for k in self.transpose_ops),
            "reshape": sum(histogram.get(k, 0) for k in self.reshape_ops),
        }


def versions(*dists: str) -> dict[str, str]:
    """Installed distribution versions (metadata only: nothing is imported)."""
    out = {}
    for d in dists:
        try:
            out[d.replace("-", "_")] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d.replace("-", "_")] = "not installed"
    return out


# ------------------------------------------------------------------------------------------ converter errors


class ConversionError(EdgeError):
    """A converter rejected the network; names the operator, the target and the module it came from."""

    def __init__(self, message: str, hint: str | None = None, op: str | None = None,
                 module_path: str | None = None, target: str | None = None) -> None:
        super().__init__(message, hint)
        self.op = op
        self.module_path = module_path
        self.target = target


# Workarounds that are known to work, keyed by the normalised operator name (see _norm).
KNOWN_WORKAROUNDS: dict[str, str] = {
    "erfinv": "no converter here lowers erfinv: replace it with a polynomial approximation written in elementwise "
              "ops (e.g. Giles' single-precision erfinv)",
    "linalginv": "matrix inverse is only convertible on constants: precompute it outside the network",
    "linalginvex": "matrix inverse is only convertible on constants: precompute it outside the network",
    "cummax": "write it as a loop-free max over a triangular mask, or move it out of the network",
    "kthvalue": "use torch.topk (supported by all three converters) and take the last value",
    "i0": "replace the Bessel function with a short series expansion in elementwise ops",
    "upsamplebicubic2d": "use bilinear interpolation: TFLite has no bicubic resize",
    "gridsampler2d": "grid_sample only converts for Core ML (iOS16+) and ONNX opset >= 16; avoid it for TFLite",
    "adaptiveavgpool2d": "pick an --img-size whose final feature map is a multiple of the pooled size, or use "
                         "mean((2, 3), keepdim=True)",
    "nonzero": "data-dependent shapes do not convert: use a fixed-size mask instead",
}

_OP_PATTERNS = [
    r"Lowering not found: (?:torch\.ops\.)?([\w.]+)",
    r"No ONNX function found for <OpOverload\(op='([\w.]+)'",
    r"Unsupported fx node (\w+)",
    r"lowering for Torch `(\w+)` op is not supported",
    r"Torch (?:op|var) '?(\w+)'? (?:is )?not (?:implemented|supported)",
    r"PyTorch convert function for op '(\w+)' not implemented",
    r"call_function\[target=torch\.ops\.([\w.]+)\]",
    r"Cannot convert operator (\w+)",
]


def _norm(op: str) -> str:
    """'torch.ops.aten.erf_inv.default' / 'prims.erf_inv' / 'erfinv' -> 'erfinv'."""
    op = op.strip()
    if op.startswith("torch.ops."):
        op = op[len("torch.ops."):]
    parts = op.split(".")
    if len(parts) >= 2 and parts[0] in ("aten", "prims", "quantized_decomposed", "torchvision"):
        parts = parts[1:]
    name = parts[0]
    return name.replace("_", "").lower()


def operator_from_error(exc: BaseException) -> str | None:
    """The operator a converter error names, if any (searching the exception chain)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    texts = []
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(texts)
    for pat in _OP_PATTERNS:
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


def module_of_op(programs: Iterable[torch.export.ExportedProgram], op: str) -> tuple[str | None, str | None]:
    """(module path, module type) of the first node calling ``op`` in the exported programs."""
    want = _norm(op)
    for ep in programs:
        for node in ep.graph.nodes:
            if node.op != "call_function":
                continue
            if _norm(str(node.target)) != want:
                continue
            stack = node.meta.get("nn_module_stack") or {}
            if not stack:
                return "<top level>", None
            path, typ = list(stack.values())[-1]
            typ_name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
            return _clean_path(path) or "<top level>", typ_name.rsplit(".", 1)[-1]
    return None, None


def _clean_path(path: str) -> str:
    # torch.export writes "L['self'].block[0]" style or "block.0" depending on version
    path = re.sub(r"L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\._modules\['([^']+)'\]", r".\1", path)
    return path.strip(".")


def explain_conversion_failure(exc: BaseException, target: str, ctx: ExportContext) -> ConversionError:
    """Turn a converter's exception into one clear error: operator, target, module path, workaround."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    op = operator_from_error(exc)
    if op is None:
        return ConversionError(
            f"{target} conversion of {ctx.name} failed: {type(exc).__name__}: {first[:300]}",
            "run with --debug for the converter's traceback",
            target=target,
        )
    path = typ = None
    try:
        ep = ctx.exported_program
        path, typ = module_of_op([ep], op)
        if path is None:
            path, typ = module_of_op([ep.run_decompositions()], op)
    except Exception:  # noqa: BLE001 - the network itself may not export; the op name still helps
        pass
    where = f" in module `{path}`" + (f" ({typ})" if typ else "") if path else ""
    short = _norm(op)
    hint = KNOWN_WORKAROUNDS.get(short)
    msg = f"the {target} converter rejected operator `{op}`{where} of {ctx.name}"
    return ConversionError(
        msg,
        hint or "no known workaround: rewrite that part of the network with supported ops, or export the other "
                "targets (--target onnx|tflite|coreml); --debug shows the converter's traceback",
        op=op, module_path=path, target=target,
    )


def first_line(exc: BaseException, limit: int = 300) -> str:
    s = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return s[:limit]


def float_nchw_to(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Prepare one float NCHW input for a tensor described by a manifest I/O entry (layout, dtype, quantization)."""
    if spec.get("layout") == "NHWC" and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    q = spec.get("quantization")
    dtype = np.dtype(spec.get("dtype", "float32"))
    if q and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min, info.max)
    return x.astype(dtype)


def to_float_nchw(y: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Undo :func:`float_nchw_to` on an output: dequantize integer tensors, NHWC -> NCHW."""
    q = spec.get("quantization")
    y = np.asarray(y)
    if q and np.issubdtype(y.dtype, np.integer):
        y = (y.astype(np.float32) - q["zero_point"]) * q["scale"]
    y = y.astype(np.float32)
    if spec.get("layout") == "NHWC" and y.ndim == 4:
        y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    return y

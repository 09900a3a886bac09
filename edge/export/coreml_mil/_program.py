"""Load a Core ML program (MIL) and execute it with the kernels in ``ops``.

Core ML has no runtime off Apple platforms, so this is how a ``.mlpackage`` is checked on Linux:
coremltools reads the program back into Python objects (ops, vars, const weights), and each op runs
as one torch kernel in float32. Every var is stored in its declared MIL dtype: fp16 results are rounded
to fp16 after each op (close to what the device computes, and fast), integers stay integers.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.errors import EdgeError
from edge.export.coreml_mil.ops import KERNELS, Kernel

# MIL dtype -> (torch storage dtype, numpy dtype returned to callers); fp16 is stored as float32, rounded
_DTYPES: dict[str, tuple[torch.dtype, Any]] = {
    "fp16": (torch.float32, np.float16),
    "fp32": (torch.float32, np.float32),
    "fp64": (torch.float32, np.float32),
    "int32": (torch.int32, np.int32),
    "int64": (torch.int64, np.int64),
    "int16": (torch.int16, np.int16),
    "uint16": (torch.int32, np.uint16),
    "int8": (torch.int8, np.int8),
    "uint8": (torch.uint8, np.uint8),
    "bool": (torch.bool, np.bool_),
}
_CONST_OPS = ("const",)


class UnsupportedOpError(EdgeError):
    """The program holds an op (or an op input) that the reference interpreter has no kernel for."""


@dataclass(frozen=True)
class VarInfo:
    name: str
    dtype: str  # MIL dtype string: fp16, fp32, int32, bool, int8, ...
    shape: tuple[int | None, ...] | None  # None entries are symbolic (flexible) dimensions


@dataclass
class Step:
    """One non-const operation, bound to its kernel."""

    op_type: str
    name: str
    kernel: Kernel | None
    args: dict[str, str | list[str]]  # kernel input name -> var name (or list of names)
    outputs: list[VarInfo]
    constant: bool = False  # every input is a const: computed once and cached (constexpr_* weights)

    @property
    def var(self) -> str:
        return self.outputs[0].name if self.outputs else self.name


@dataclass
class Program:
    """A MIL function ready to execute: inputs, steps in order, const values, outputs."""

    inputs: list[VarInfo]
    outputs: list[VarInfo]
    steps: list[Step]
    consts: dict[str, Any]
    source: str = "<in-memory>"
    opset: str | None = None
    mil: Any = None  # the coremltools Program it came from
    _folded: dict[bool, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def unsupported(self) -> list[Step]:
        return [s for s in self.steps if s.kernel is None]

    def histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.op_type] = counts.get(s.op_type, 0) + 1
        return dict(sorted(counts.items()))


# ---------------------------------------------------------------- loading


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    try:
        return types.builtin_to_string(var.dtype)
    except Exception:  # list / tuple / dict typed vars
        return "unknown"


def _shape(var) -> tuple[int | None, ...] | None:
    try:
        shape = var.shape
    except Exception:
        return None
    return tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in shape)


def _info(var) -> VarInfo:
    return VarInfo(var.name, _dtype_name(var), _shape(var))


def _const_value(val: Any) -> Any:
    """A const's numpy value as a torch tensor (fp16 widened to fp32 exactly); strings stay strings."""
    if isinstance(val, (str, np.str_)):
        return str(val)
    arr = np.asarray(val)
    if arr.dtype.kind in "US":
        return arr.tolist()
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint16 or arr.dtype == np.uint32:
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.array(arr, order="C", copy=True))


def from_mil(prog, source: str = "<in-memory>", function: str = "main") -> Program:
    """Bind a coremltools ``Program`` (loaded from a package, or built with ``mb.program``) to kernels."""
    func = prog.functions[function]
    consts: dict[str, Any] = {}
    steps: list[Step] = []
    constant_names: set[str] = set()  # consts and constexpr_* outputs computed only from consts
    for op in func.operations:
        if op.blocks:
            raise UnsupportedOpError(
                f"MIL op {op.op_type!r} (var {op.outputs[0].name!r}) has nested blocks (control flow)",
                "the reference interpreter runs straight-line programs only",
            )
        if op.op_type in _CONST_OPS:
            consts[op.outputs[0].name] = _const_value(op.outputs[0].val)
            constant_names.add(op.outputs[0].name)
            continue
        args: dict[str, str | list[str]] = {}
        for key, value in op.inputs.items():
            args[key] = [v.name for v in value] if isinstance(value, (list, tuple)) else value.name
        kern = KERNELS.get(op.op_type)
        outputs = [_info(v) for v in op.outputs]
        constant = op.op_type.startswith("constexpr_") and all(
            n in constant_names for a in args.values() for n in (a if isinstance(a, list) else [a])
        )
        if constant:
            constant_names.update(o.name for o in outputs)
        steps.append(Step(op.op_type, op.name, kern, args, outputs, constant))
    opset = getattr(func, "opset_version", None)
    return Program(
        inputs=[_info(v) for v in func.inputs.values()],
        outputs=[_info(v) for v in func.outputs],
        steps=steps,
        consts=consts,
        source=source,
        opset=getattr(opset, "name", None if opset is None else str(opset)),
        mil=prog,
    )


def _strip_docstrings(spec) -> None:
    """coremltools' loader refuses programs with docStrings ("would be lost"); clear them on a copy."""
    prog = spec.mlProgram
    prog.docString = ""
    for func in prog.functions.values():
        for block in func.block_specializations.values():
            for op in block.operations:
                for value in op.attributes.values():
                    value.docString = ""
                for arg in op.inputs.values():
                    for binding in arg.arguments:
                        if binding.WhichOneof("binding") == "value":
                            binding.value.docString = ""


def load_mil(mlpackage: str | Path):
    """The coremltools Program (pymil) of a ``.mlpackage``, without compiling or loading it in Core ML."""
    path = Path(mlpackage)
    if not path.exists():
        raise EdgeError(f"Core ML package {str(path)!r} does not exist", "check the path to the .mlpackage")
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    try:
        model = ct.models.MLModel(str(path), skip_model_load=True)
    except Exception as e:  # corrupt or not a package
        raise EdgeError(f"cannot read Core ML package {str(path)!r}: {e}", "re-export the model") from e
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise EdgeError(
            f"{str(path)!r} is a {spec.WhichOneof('Type')} model, not an ML program",
            "the reference interpreter reads ML programs (convert_to='mlprogram')",
        )
    copy = type(spec)()
    copy.CopyFrom(spec)
    _strip_docstrings(copy)
    with contextlib.redirect_stdout(io.StringIO()):
        return load(copy, copy.specificationVersion, model.weights_dir)


def load_program(mlpackage: str | Path) -> Program:
    """Read a ``.mlpackage`` into an executable ``Program`` (weights included)."""
    return from_mil(load_mil(mlpackage), source=str(mlpackage))


def op_histogram_from_spec(mlpackage: str | Path) -> dict[str, int]:
    """Op type counts of the main function, read from the protobuf only (no weights); ``const`` not counted."""
    import coremltools as ct

    spec = ct.models.MLModel(str(mlpackage), skip_model_load=True).get_spec()
    counts: dict[str, int] = {}

    def walk(block) -> None:
        for op in block.operations:
            if op.type not in _CONST_OPS:
                counts[op.type] = counts.get(op.type, 0) + 1
            for inner in op.blocks:
                walk(inner)

    func = spec.mlProgram.functions["main"]
    walk(func.block_specializations[func.opset])
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------- execution


def _store(value: Any, info: VarInfo, round_fp16: bool, step: Step) -> Any:
    """Cast a kernel result to its var's declared dtype; round fp16 vars; check the declared shape."""
    if not isinstance(value, torch.Tensor):
        return value
    if info.dtype in _DTYPES:
        torch_dtype = _DTYPES[info.dtype][0]
        if value.dtype != torch_dtype:
            value = value.to(torch_dtype)
        if info.dtype == "fp16" and round_fp16:
            value = value.to(torch.float16).to(torch.float32)
    if info.shape is not None and len(info.shape) == value.dim():
        if any(d is not None and d != s for d, s in zip(info.shape, value.shape)):
            raise EdgeError(
                f"MIL op {step.op_type!r} (var {info.name!r}) produced shape {tuple(value.shape)}, "
                f"the program declares {info.shape}",
                "this is a bug in the reference interpreter's kernel for this op",
            )
    elif info.shape is not None:
        raise EdgeError(
            f"MIL op {step.op_type!r} (var {info.name!r}) produced rank {value.dim()}, "
            f"the program declares shape {info.shape}",
            "this is a bug in the reference interpreter's kernel for this op",
        )
    return value


def _bind(step: Step, env: dict[str, Any]) -> dict[str, Any]:
    kern = step.kernel
    assert kern is not None
    kwargs: dict[str, Any] = {}
    for key in step.args:
        if key not in kern.inputs:
            raise UnsupportedOpError(
                f"MIL op {step.op_type!r} (var {step.var!r}) has input {key!r} that the reference interpreter "
                "does not know",
                f"teach the {step.op_type!r} kernel in edge/export/coreml_mil/ops.py what {key!r} means",
            )
    for key, spec in kern.inputs.items():
        if key not in step.args:
            if spec.required:
                raise EdgeError(f"MIL op {step.op_type!r} (var {step.var!r}) lacks required input {key!r}")
            kwargs[key] = spec.default
            continue
        ref = step.args[key]
        if spec.kind == "tensors":
            kwargs[key] = [env[n] for n in (ref if isinstance(ref, list) else [ref])]
        elif isinstance(ref, list):
            raise EdgeError(f"MIL op {step.op_type!r} (var {step.var!r}) input {key!r} is a list, expected one value")
        elif spec.kind == "value":
            v = env[ref]
            kwargs[key] = v.tolist() if isinstance(v, torch.Tensor) else v
        else:
            kwargs[key] = env[ref]
    return kwargs


def _check_supported(program: Program) -> None:
    missing = program.unsupported()
    if missing:
        types_ = sorted({s.op_type for s in missing})
        first = missing[0]
        raise UnsupportedOpError(
            f"the reference MIL interpreter has no kernel for op {first.op_type!r} (var {first.var!r})"
            + (f"; also missing: {', '.join(t for t in types_ if t != first.op_type)}" if len(types_) > 1 else ""),
            "add one kernel per op type in edge/export/coreml_mil/ops.py, with its own test",
        )


def _feeds(program: Program, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    expected = {v.name: v for v in program.inputs}
    unknown = sorted(set(inputs) - set(expected))
    missing = sorted(set(expected) - set(inputs))
    if unknown or missing:
        raise EdgeError(
            f"program {program.source} takes inputs {sorted(expected)}; got {sorted(inputs)}",
            "pass one array per program input, by name",
        )
    feeds: dict[str, torch.Tensor] = {}
    for name, arr in inputs.items():
        info = expected[name]
        arr = np.asarray(arr)
        want = np.dtype(_DTYPES[info.dtype][1]) if info.dtype in _DTYPES else None
        if want is not None and arr.dtype != want:
            raise EdgeError(
                f"input {name!r} of {program.source} is {info.dtype}; got a {arr.dtype} array",
                f"pass arr.astype(np.{want.name})",
            )
        if info.shape is not None and (
            len(info.shape) != arr.ndim or any(d is not None and d != s for d, s in zip(info.shape, arr.shape))
        ):
            raise EdgeError(f"input {name!r} of {program.source} has shape {info.shape}; got {arr.shape}")
        t = torch.from_numpy(np.array(arr, order="C", copy=True))
        feeds[name] = t.float() if arr.dtype.kind == "f" else t
    return feeds


def _last_uses(program: Program) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, s in enumerate(program.steps):
        for ref in s.args.values():
            for n in ref if isinstance(ref, list) else [ref]:
                last[n] = i
    return last


def execute(program: Program, inputs: dict[str, np.ndarray], fp16_rounding: bool | None = None,
            keep_all: bool = False) -> dict[str, Any]:
    """Run every step; return the env of vars (all of them with ``keep_all``, else only the outputs)."""
    _check_supported(program)
    round_fp16 = True if fp16_rounding is None else bool(fp16_rounding)
    folded = program._folded.setdefault(round_fp16, {})
    env: dict[str, Any] = dict(program.consts)
    env.update(folded)
    env.update(_feeds(program, inputs))
    keep = {v.name for v in program.outputs}
    last = None if keep_all else _last_uses(program)
    with torch.inference_mode():
        for i, step in enumerate(program.steps):
            if step.constant and step.outputs[0].name in folded:
                continue
            try:
                result = step.kernel.fn(**_bind(step, env))  # type: ignore[union-attr]
            except EdgeError:
                raise
            except Exception as e:
                raise EdgeError(
                    f"MIL op {step.op_type!r} (var {step.var!r}) failed in the reference interpreter: "
                    f"{type(e).__name__}: {e}",
                    "this op's inputs are outside what its kernel handles; see edge/export/coreml_mil/ops.py",
                ) from e
            results = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            if len(results) != len(step.outputs):
                raise EdgeError(
                    f"MIL op {step.op_type!r} (var {step.var!r}) gave {len(results)} outputs, "
                    f"the program declares {len(step.outputs)}"
                )
            for info, value in zip(step.outputs, results):
                env[info.name] = _store(value, info, round_fp16, step)
                if step.constant:
                    folded[info.name] = env[info.name]
            if last is not None:
                for ref in step.args.values():
                    for n in ref if isinstance(ref, list) else [ref]:
                        if last.get(n) == i and n not in keep and n not in program.consts:
                            env.pop(n, None)
    return env


def to_numpy(value: Any, info: VarInfo) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    np_dtype = _DTYPES.get(info.dtype, (None, None))[1]
    arr = value.detach().cpu().numpy()
    return arr.astype(np_dtype) if np_dtype is not None else arr

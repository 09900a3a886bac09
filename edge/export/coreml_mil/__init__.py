"""A reference interpreter for Core ML programs (MIL), so Core ML artifacts are checked on Linux.

Core ML itself runs only on Apple platforms. coremltools can still read a ``.mlpackage``'s program and
weights on Linux; this package executes that program op by op with torch (one kernel per MIL op type in
``ops.py``), so an export's numerics are compared with PyTorch the same way as ONNX Runtime and LiteRT.
An op without a kernel raises ``UnsupportedOpError``: nothing is skipped silently.

fp16 programs compute each op in float32 and round its result to fp16, which is close to the device
and fast (running natively in fp16 on a CPU is ~15x slower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.export.coreml_mil._program import (
    Program,
    UnsupportedOpError,
    VarInfo,
    execute,
    from_mil,
    load_mil,
    load_program,
    to_numpy,
)
from edge.export.coreml_mil._program import op_histogram_from_spec as _histogram
from edge.export.coreml_mil.ops import KERNELS

__all__ = [
    "KERNELS",
    "Program",
    "UnsupportedOpError",
    "VarInfo",
    "from_mil",
    "load_mil",
    "load_program",
    "op_histogram",
    "run",
    "run_with_intermediates",
    "supported_ops",
]


def _program(mlpackage_or_program: str | Path | Program) -> Program:
    if isinstance(mlpackage_or_program, Program):
        return mlpackage_or_program
    return load_program(mlpackage_or_program)


def run(mlpackage: str | Path | Program, inputs: dict[str, np.ndarray],
        fp16_rounding: bool | None = None) -> dict[str, np.ndarray]:
    """The program's outputs by name, as numpy arrays in the program's output dtypes.

    ``inputs`` must match the program's input dtypes (float16 arrays for FLOAT16 inputs).
    ``fp16_rounding`` (default on) rounds every fp16 var to fp16 after its op; off computes fp16
    programs entirely in float32. Pass a loaded ``Program`` to run many inputs without reloading weights.
    """
    program = _program(mlpackage)
    env = execute(program, inputs, fp16_rounding)
    return {v.name: to_numpy(env[v.name], v) for v in program.outputs}


def run_with_intermediates(mlpackage_or_program: str | Path | Program, inputs: dict[str, np.ndarray],
                           fp16_rounding: bool | None = None) -> dict[str, Any]:
    """Every non-const var by its MIL name (program inputs, each op's outputs); weights are left out."""
    program = _program(mlpackage_or_program)
    env = execute(program, inputs, fp16_rounding, keep_all=True)
    infos = {v.name: v for v in program.inputs}
    for step in program.steps:
        if not step.constant:
            infos.update((o.name, o) for o in step.outputs)
    return {name: to_numpy(env[name], info) for name, info in infos.items() if name in env}


def op_histogram(mlpackage: str | Path | Program) -> dict[str, int]:
    """Count of each MIL op type in the main function (``const`` values are not ops and are not counted)."""
    if isinstance(mlpackage, Program):
        return mlpackage.histogram()
    return _histogram(mlpackage)


def supported_ops() -> list[str]:
    """The MIL op types the interpreter has a kernel for."""
    return sorted(KERNELS)

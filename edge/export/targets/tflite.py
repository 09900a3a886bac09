"""TFLite (LiteRT): ``litert_torch.convert``, run in the LiteRT interpreter with its default XNNPACK delegate.

``--channels-last`` wraps the network with ``litert_torch.to_channel_last_io`` on the input and on every spatial
output: the converter's layout pass then cancels the wrapper's permutes against its own NCHW->NHWC transposes,
so a conv-only network carries no TRANSPOSE at all. A transpose feeding a BATCH_MATMUL's second operand is then
folded into the matmul (``edge.export.tflite_graph``).

fp16 stores the conv / fully-connected weights as float16 (ai-edge-quantizer's ``float_casting`` weight-only
recipe, which inserts DEQUANTIZE ops that XNNPACK folds at load time); activations stay fp32, which is what
LiteRT's CPU path and GPU delegate expect of an "fp16 model".
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.export.targets.base import Runner, Target, float_nchw_to, to_float_nchw, versions
from edge.export.tflite_graph import rewrite_in_place

if TYPE_CHECKING:
    from edge.export.context import ExportContext


class TFLiteTarget(Target):
    name = "tflite"
    artifact_name = "model.tflite"
    transpose_ops = ("TRANSPOSE",)
    reshape_ops = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
    uses_exported_program = False  # litert_torch.convert runs its own torch.export
    layout = "nhwc"  # LiteRT's CPU kernels and XNNPACK are NHWC

    def convert(self, ctx: ExportContext) -> Path:
        os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
        import litert_torch

        path = ctx.workdir / self.artifact_name
        module = ctx.model
        if ctx.options.channels_last:
            module = litert_torch.to_channel_last_io(module, args=[0], outputs=ctx.channels_last_outputs).eval()
        with lazy_fx_code():
            converted = litert_torch.convert(module, (ctx.example_io,))
        if ctx.precision == "fp16":
            fp32 = ctx.workdir / "model.fp32.tflite"
            converted.export(str(fp32))
            ctx.extras["graph_rewrites"] = rewrite_in_place(fp32)
            float16_weights(fp32, path)
            fp32.unlink()
        else:
            converted.export(str(path))
            ctx.extras["graph_rewrites"] = rewrite_in_place(path)
        return path

    def runner(self, artifact: Path, io: dict[str, Any]) -> Runner:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(artifact))
        interp.allocate_tensors()
        in_d = interp.get_input_details()
        out_d = interp.get_output_details()
        ins, outs = io["inputs"], io["outputs"]

        def run(x: np.ndarray) -> list[np.ndarray]:
            interp.set_tensor(in_d[0]["index"], float_nchw_to(x, ins[0]))
            interp.invoke()
            return [to_float_nchw(interp.get_tensor(d["index"]), spec) for d, spec in zip(out_d, outs)]

        return run

    def runtime_name(self) -> str:
        return "litert"

    def op_histogram(self, artifact: Path) -> dict[str, int]:
        """Read the flatbuffer itself: the interpreter would report XNNPACK's DELEGATE node instead of the ops."""
        from ai_edge_litert import schema_py_generated as schema

        buf = artifact.read_bytes()
        model = schema.Model.GetRootAsModel(buf, 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == schema.BuiltinOperator.CUSTOM:
                codes.append(f"CUSTOM:{(oc.CustomCode() or b'').decode()}")
            else:
                codes.append(names.get(code, f"OP_{code}"))
        counts: Counter[str] = Counter()
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                counts[codes[sg.Operators(o).OpcodeIndex()]] += 1
        return dict(counts.most_common())

    def io_spec(self, artifact: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(artifact))

        def spec(d: dict[str, Any]) -> dict[str, Any]:
            scale, zp = d.get("quantization", (0.0, 0))
            q = {"scale": float(scale), "zero_point": int(zp)} if scale else None
            return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": str(np.dtype(d["dtype"])),
                    "quantization": q}

        return [spec(d) for d in interp.get_input_details()], [spec(d) for d in interp.get_output_details()]

    def tool_versions(self) -> dict[str, str]:
        return versions("torch", "numpy", "litert-torch", "litert-converter", "ai-edge-litert", "ai-edge-quantizer")


def lazy_fx_code() -> contextlib.AbstractContextManager[None]:
    """FX graph modules that write their Python code when it is first needed, not at every ``recompile()``.

    litert-torch recompiles each graph after every pass and re-trace (56 times for Mobile-Former), though only some
    versions ever run; writing the code for a 2,000-node graph takes a noticeable fraction of a second each
    time. The converted file is byte-identical (tests/export/test_targets.py).
    """
    try:
        from torch.fx._lazy_graph_module import _use_lazy_graph_module
    except ImportError:  # a torch without lazy graph modules: convert as before
        return contextlib.nullcontext()
    return _use_lazy_graph_module(True)


def float16_weights(src: Path, dst: Path) -> None:
    """fp32 .tflite -> the same graph with float16 conv / fully-connected weights."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    qt = quantizer.Quantizer(str(src))
    qt.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
    )
    result = qt.quantize(enable_progress_report=False)
    dst.write_bytes(bytes(result.quantized_model))

"""ONNX: ``torch.onnx.export(dynamo=True)`` into one self-contained file, run in ONNX Runtime.

fp16 converts the fp32 graph with ONNX Runtime's own float16 tool, keeping float32 inputs and outputs (so every
artifact of a model takes the same input) and leaving the ops that tool knows to be fp16-unsafe in fp32.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.export.targets.base import Runner, Target, float_nchw_to, to_float_nchw, versions

if TYPE_CHECKING:
    from edge.export.context import ExportContext

# torch.onnx's own default, and the first opset with a native Gelu: at 18 each GELU is five nodes (Div, Erf, Add,
# Mul, Mul) that ONNX Runtime 1.31 does not fuse back on CPU, so EfficientFormerV2-S0 ran at 0.82x the speed of timm's
# network exported at torch's default (1.0x at 20, benchmarks/bench_fast_artifacts.py). ONNX Runtime reads it
# since 1.17; ``--opset 18`` remains for older runtimes.
DEFAULT_OPSET = 20


def _metadata(ctx: ExportContext) -> dict[str, str]:
    """What an app needs beside the graph, as ONNX metadata_props (the manifest holds the same)."""
    import json

    meta = {
        "edge.model": ctx.name,
        "edge.precision": ctx.precision,
        "edge.img_size": str(ctx.img_size),
        "edge.preprocess": json.dumps({"mean": list(ctx.mean), "std": list(ctx.std)}),
        "edge.input_layout": "NHWC" if ctx.options.channels_last else "NCHW",
    }
    if ctx.options.class_labels:
        meta["edge.class_labels"] = json.dumps(list(ctx.options.class_labels))
    return meta


def _drop_duplicate_nodes(model: Any) -> Any:
    """ORT's float16 tool inserts the same Cast twice when one fp16 tensor feeds two ops it keeps in fp32
    (seen in EfficientFormerV2), which ONNX Runtime rejects ("two nodes with same node name"). Identical nodes
    compute identical values, so all but the first are dropped."""
    seen: set[bytes] = set()
    keep = []
    for node in model.graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return model


def _toposort(model: Any) -> Any:
    """The float16 tool appends its Cast nodes at the end of the graph; the ONNX spec (and onnx.checker) wants
    nodes in topological order, which ONNX Runtime forgives but other runtimes may not."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a subgraph-captured name: keep the original order
            return model
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model


# ORT graph optimizers that edge's own sessions turn off. WeightBiasQuantization (in ORT 1.31, at optimization level
# EXTENDED and above; the default is ALL) quantizes, per tensor and at load, the float weights of a Conv that sits
# between DequantizeLinear and QuantizeLinear, so a layer the quantizer kept float (--keep-float, --auto-mixed) ran
# as int8 after all: 9 of 9 kept-float convolutions of Mobile-Former-294M did. Files without such layers run the
# same either way. ORT accepts unknown names here, so builds without that optimizer are unaffected.
ORT_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def session(path: Path | bytes, threads: int | None = 1, optimize: bool = True):
    """An ONNX Runtime CPU session as edge runs every ONNX file: ``threads`` None leaves ORT's default, and
    ``optimize`` False runs the graph as stored (QDQ simulated, nothing fused)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=ORT_DISABLED_OPTIMIZERS)


class OnnxTarget(Target):
    name = "onnx"
    artifact_name = "model.onnx"
    transpose_ops = ("Transpose",)
    reshape_ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

    def convert(self, ctx: ExportContext) -> Path:
        import torch

        path = ctx.workdir / self.artifact_name
        module, wrapped = ctx.io_module()
        source = module if wrapped else ctx.exported_program
        program = torch.onnx.export(
            source,
            (ctx.example_io,) if wrapped else (),
            dynamo=True,
            opset_version=ctx.options.opset or DEFAULT_OPSET,
            input_names=[ctx.input_name],
            output_names=list(ctx.output_names),
            optimize=True,
            verbose=False,
        )
        program.save(str(path), external_data=False)
        import onnx

        model = onnx.load(str(path))
        if ctx.precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = _toposort(_drop_duplicate_nodes(convert_float_to_float16(model, keep_io_types=True)))
        onnx.helper.set_model_props(model, _metadata(ctx))
        onnx.save(model, str(path))
        return path

    def runner(self, artifact: Path, io: dict[str, Any]) -> Runner:
        sess = session(artifact, threads=None)
        in_names = [i.name for i in sess.get_inputs()]
        ins = io["inputs"]
        outs = io["outputs"]

        def run(x: np.ndarray) -> list[np.ndarray]:
            feed = {in_names[0]: float_nchw_to(x, ins[0])}
            ys = sess.run(None, feed)
            return [to_float_nchw(y, spec) for y, spec in zip(ys, outs)]

        return run

    def runtime_name(self) -> str:
        return "onnxruntime"

    def op_histogram(self, artifact: Path) -> dict[str, int]:
        import onnx

        model = onnx.load(str(artifact), load_external_data=False)
        funcs = {(f.domain, f.name): f for f in model.functions}
        counts: Counter[str] = Counter()

        def walk(nodes: Any, depth: int = 0) -> None:
            for n in nodes:
                f = funcs.get((n.domain, n.op_type))
                if f is not None and depth < 16:
                    walk(f.node, depth + 1)
                    continue
                counts[n.op_type] += 1
                for attr in n.attribute:
                    if attr.g is not None and attr.g.node:
                        walk(attr.g.node, depth + 1)

        walk(model.graph.node)
        return dict(counts.most_common())

    def io_spec(self, artifact: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        import onnx
        from onnx.helper import tensor_dtype_to_np_dtype

        model = onnx.load(str(artifact), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}

        def spec(v: Any) -> dict[str, Any]:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
            return {"name": v.name, "shape": shape, "dtype": str(np.dtype(tensor_dtype_to_np_dtype(t.elem_type))),
                    "quantization": None}

        return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])

    def tool_versions(self) -> dict[str, str]:
        return versions("torch", "numpy", "onnx", "onnxscript", "onnxruntime")

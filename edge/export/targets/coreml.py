"""Core ML: ``coremltools.convert`` of the ``torch.export`` program to an ML Program (iOS 16+).

Core ML cannot execute on Linux, so the numerics gate runs the saved program in edge's reference MIL interpreter
(``edge.export.coreml_mil``); on macOS it also runs Core ML itself and gates on both.

Inputs and outputs stay float32 in fp16 models too (two casts), so every precision takes the same input.

``--image-input`` makes the input an ``ImageType``. Core ML applies one scale to all channels plus a bias per
channel, while the normalisation is ``(p/255 - mean_c) / std_c``. edge sets ``scale = 1/(255·s)`` and
``bias_c = -mean_c/s`` with ``s`` the mean of the three stds, which is exact when the stds are equal; otherwise
the remaining per-channel factor ``s/std_c`` is one elementwise multiply at the network's input, so the result
is still exact (the manifest records it under ``image_input``).

Class labels go into the model's user-defined metadata (``edge.class_labels``, a JSON list) rather than a
classifier config: a classifier config replaces the logits tensor with a label/probability dictionary, which
would change what apps and the numerics gate read.
"""

from __future__ import annotations

import contextlib
import json
import platform
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edge.errors import EdgeError
from edge.export.targets.base import Runner, Target, versions

if TYPE_CHECKING:
    from edge.export.context import ExportContext


class _PerChannelScale(torch.nn.Module):
    """Multiplies the NCHW input by a per-channel factor before the network (the part ImageType cannot hold)."""

    def __init__(self, wrapped: torch.nn.Module, factor: list[float]) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.register_buffer("factor", torch.tensor(factor, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> Any:
        return self.wrapped(x * self.factor)


@contextlib.contextmanager
def validated_once() -> Iterator[Any]:
    """Check the MIL program once, after the last graph pass, instead of after each of the ~110 passes.

    coremltools re-validates the whole program after every pass (``Program.validate``, a read-only walk over
    every op's inputs and outputs): about a third of the Core ML conversion of Mobile-Former. Yields the real
    check; call it on the converted program so a broken program still fails the export.
    """
    from coremltools.converters.mil.mil.program import Program

    real = Program.validate
    Program.validate = lambda self, check_essential_scope=False: None  # type: ignore[method-assign]
    try:
        yield real
    finally:
        Program.validate = real  # type: ignore[method-assign]


def image_scaling(mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """ImageType scale/bias and the per-channel factor left for the network (None when stds are equal)."""
    s = float(np.mean(std))
    factor = [s / c for c in std]
    exact = all(abs(f - 1.0) < 1e-7 for f in factor)
    return {
        "scale": 1.0 / (255.0 * s),
        "bias": [-m / s for m in mean],
        "per_channel_factor": None if exact else factor,
        "color_layout": "RGB",
    }


class CoreMLTarget(Target):
    name = "coreml"
    artifact_name = "model.mlpackage"
    transpose_ops = ("transpose",)
    reshape_ops = ("reshape", "squeeze", "expand_dims", "flatten2d")

    def convert(self, ctx: ExportContext) -> Path:
        import coremltools as ct

        path = ctx.workdir / self.artifact_name
        module, wrapped = ctx.io_module()
        example = ctx.example_io
        if ctx.options.image_input:  # (the pipeline refuses --image-input with --channels-last up front)
            sc = image_scaling(ctx.mean, ctx.std)
            ctx.extras["image_input"] = sc
            if sc["per_channel_factor"] is not None:
                module, wrapped = _PerChannelScale(ctx.model, sc["per_channel_factor"]).eval(), True
            inputs = [ct.ImageType(name=ctx.input_name, shape=tuple(example.shape), scale=sc["scale"],
                                   bias=sc["bias"], color_layout=ct.colorlayout.RGB)]
        else:
            inputs = [ct.TensorType(name=ctx.input_name, shape=tuple(example.shape), dtype=np.float32)]
        if wrapped:
            from edge.export.context import export_program

            program = export_program(module, example, ctx.progress)
        else:
            program = ctx.exported_program
        program = _drop_aliases(program.run_decompositions({}))
        precision = ct.precision.FLOAT16 if ctx.precision == "fp16" else ct.precision.FLOAT32
        with validated_once() as validate:
            mlmodel = ct.convert(
                program,
                inputs=inputs,
                outputs=[ct.TensorType(name=n, dtype=np.float32) for n in ctx.output_names],
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=precision,
                skip_model_load=True,
            )
            validate(mlmodel._mil_program)
        self._describe(mlmodel, ctx)
        mlmodel.save(str(path))
        return path

    def _describe(self, mlmodel: Any, ctx: ExportContext) -> None:
        from edge import __version__

        family = ctx.info.family if ctx.info else "user network"
        mean = ", ".join(f"{v:g}" for v in ctx.mean)
        std = ", ".join(f"{v:g}" for v in ctx.std)
        mlmodel.short_description = (
            f"{ctx.name} ({family}) image classifier, {ctx.precision}, {ctx.img_size}x{ctx.img_size} RGB input. "
            f"Exported and numerically checked by edge {__version__}."
        )
        mlmodel.author = f"edge {__version__}"
        ckpt = ctx.extras.get("checkpoint") or {}
        mlmodel.version = (ckpt.get("sha256") or "no-checkpoint")[:16]
        if ctx.options.image_input:
            mlmodel.input_description[ctx.input_name] = (
                f"RGB image {ctx.img_size}x{ctx.img_size}; normalisation (p/255 - mean)/std with mean=({mean}), "
                f"std=({std}) is folded into the model"
            )
        else:
            layout = "NHWC" if ctx.options.channels_last else "NCHW"
            mlmodel.input_description[ctx.input_name] = (
                f"float32 {layout} RGB image tensor, resized and centre-cropped to {ctx.img_size}x{ctx.img_size}, "
                f"normalised as (p/255 - mean)/std with mean=({mean}), std=({std})"
            )
        for n, shape in zip(ctx.output_names, ctx.output_shapes or [()] * len(ctx.output_names)):
            if len(shape) == 2:
                desc = f"float32 logits over {shape[1]} classes (no softmax)"
            else:
                desc = f"float32 tensor of shape {list(shape)}"
            mlmodel.output_description[n] = desc
        meta = {
            "edge.model": ctx.name,
            "edge.family": family,
            "edge.precision": ctx.precision,
            "edge.img_size": str(ctx.img_size),
            "edge.preprocess": json.dumps({"mean": list(ctx.mean), "std": list(ctx.std)}),
        }
        if ckpt.get("sha256"):
            meta["edge.checkpoint_sha256"] = ckpt["sha256"]
        if ctx.options.class_labels:
            meta["edge.class_labels"] = json.dumps(list(ctx.options.class_labels))
        mlmodel.user_defined_metadata.update(meta)

    # ------------------------------------------------------------------------------------------- running

    def runners(self, artifact: Path, io: dict[str, Any]) -> list[tuple[str, Runner]]:
        out = [("mil-interpreter", self.runner(artifact, io))]
        if platform.system() == "Darwin":
            out.append(("coreml", self._coreml_runner(artifact, io)))
        return out

    def runtime_name(self) -> str:
        return "mil-interpreter"

    def runner(self, artifact: Path, io: dict[str, Any]) -> Runner:
        try:
            from edge.export import coreml_mil
        except ImportError as e:
            raise EdgeError(
                "Core ML numerics need edge's MIL interpreter (edge.export.coreml_mil), which is not available: "
                f"{e}",
                "the Core ML artifact cannot be checked on this machine; reinstall edge",
            ) from None
        program = coreml_mil.load_program(artifact)
        feed_of = _feeder(io)
        names = [o["name"] for o in io["outputs"]]

        def run(x: np.ndarray) -> list[np.ndarray]:
            res = coreml_mil.run(program, feed_of(x))
            return [np.asarray(res[n], dtype=np.float32) for n in names]

        return run

    def _coreml_runner(self, artifact: Path, io: dict[str, Any]) -> Runner:  # pragma: no cover - macOS only
        import coremltools as ct
        from PIL import Image

        model = ct.models.MLModel(str(artifact))
        feed_of = _feeder(io)
        names = [o["name"] for o in io["outputs"]]
        image = bool(io.get("image_input"))
        in_name = io["inputs"][0]["name"]

        def run(x: np.ndarray) -> list[np.ndarray]:
            feed = feed_of(x)
            if image:
                px = feed[in_name][0].transpose(1, 2, 0).astype(np.uint8)
                feed = {in_name: Image.fromarray(px, "RGB")}
            res = model.predict(feed)
            return [np.asarray(res[n], dtype=np.float32) for n in names]

        return run

    # ------------------------------------------------------------------------------------------- reading

    def op_histogram(self, artifact: Path) -> dict[str, int]:
        """MIL operations of the main function (weights, i.e. ``const``, are not counted)."""
        spec = _spec(artifact)
        fn = spec.mlProgram.functions["main"]
        block = fn.block_specializations[fn.opset]
        counts: Counter[str] = Counter()

        def walk(ops: Any) -> None:
            for op in ops:
                if op.type != "const":
                    counts[op.type] += 1
                for b in op.blocks:
                    walk(b.operations)

        walk(block.operations)
        return dict(counts.most_common())

    def io_spec(self, artifact: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from coremltools.proto import FeatureTypes_pb2 as ft

        spec = _spec(artifact)

        def feature(f: Any) -> dict[str, Any]:
            kind = f.type.WhichOneof("Type")
            if kind == "multiArrayType":
                dt = ft.ArrayFeatureType.ArrayDataType.Name(f.type.multiArrayType.dataType).lower()
                shape = [int(s) for s in f.type.multiArrayType.shape]
                dtype = {"float32": "float32", "float16": "float16", "double": "float64", "int32": "int32"}.get(dt, dt)
                return {"name": f.name, "shape": shape, "dtype": dtype, "quantization": None}
            if kind == "imageType":
                it = f.type.imageType
                color = ft.ImageFeatureType.ColorSpace.Name(it.colorSpace)
                return {"name": f.name, "shape": [1, 3, int(it.height), int(it.width)], "dtype": f"image:{color}",
                        "quantization": None}
            return {"name": f.name, "shape": [], "dtype": kind, "quantization": None}

        return [feature(f) for f in spec.description.input], [feature(f) for f in spec.description.output]

    def tool_versions(self) -> dict[str, str]:
        return versions("torch", "numpy", "coremltools")


def _drop_aliases(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """A slice that keeps a whole dimension (GhostNet's ``out[:, :out_chs]``) exports as ``aten.alias``, which
    coremltools rejects ("Unsupported fx node alias"). An alias computes nothing, so its uses take its input."""
    graph = program.graph_module.graph
    dropped = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and str(node.target) in ("aten.alias.default", "aten.alias_copy.default"):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            dropped += 1
    if dropped:
        graph.lint()
        program.graph_module.recompile()
    return program


def _spec(artifact: Path) -> Any:
    import coremltools as ct

    return ct.models.MLModel(str(artifact), skip_model_load=True).get_spec()


def _feeder(io: dict[str, Any]):
    """float NCHW normalised input -> the program's input dict (pixels 0..255 for an image input)."""
    spec = io["inputs"][0]
    name = spec["name"]
    image = io.get("image_input")
    if image:
        mean = np.asarray(io["preprocess"]["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(io["preprocess"]["std"], np.float32).reshape(1, -1, 1, 1)

        def feed(x: np.ndarray) -> dict[str, np.ndarray]:
            px = np.clip(np.round((x * std + mean) * 255.0), 0, 255).astype(np.float32)
            return {name: px}

        return feed
    nhwc = spec.get("layout") == "NHWC"

    def feed(x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x
        return {name: x.astype(np.float32)}

    return feed

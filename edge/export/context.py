"""What one export carries through the pipeline: options, the network, and the work folder.

Targets and quantizers receive an :class:`ExportContext` and write into ``ctx.workdir``; anything they want
in the manifest goes into ``ctx.extras``. Nothing here imports a converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edge._progress import Progress

if TYPE_CHECKING:
    from edge.models import ModelInfo

TARGET_NAMES = ("coreml", "tflite", "onnx")
FLOAT_PRECISIONS = ("fp32", "fp16")
QUANT_PRECISIONS = ("int8", "int8w", "w8a16", "int8dyn")
PRECISIONS = FLOAT_PRECISIONS + QUANT_PRECISIONS
# precisions whose activations are quantized: their graphs run integer elementwise ops (deploy arithmetic "integer")
INTEGER_ACTIVATION_PRECISIONS = ("int8", "w8a16")


def deploy_arithmetic(precision: str) -> str:
    """The deploy form an artifact of this precision is converted from (``edge.models.reparameterize_model``)."""
    return "integer" if precision in INTEGER_ACTIVATION_PRECISIONS else "float"


@dataclass
class QuantOptions:
    """Quantization flags (issue 4); the pipeline only carries them to ``edge.export.quantize``."""

    calib_dir: Path | None = None  # --calib DIR (None -> built-in natural images, edge.data.builtin_images())
    calib_samples: int = 32  # --calib-samples
    calib_method: str = "minmax"  # --calib-method minmax|percentile|entropy
    keep_float: tuple[str, ...] = ()  # --keep-float LAYER...
    auto_mixed: int = 0  # --auto-mixed N
    float_io: bool = False  # --float-io (TFLite static int8 keeps float I/O)
    engine: str = "auto"  # --engine auto|aeq|pt2e (TFLite W8A8: ai-edge-quantizer or litert-torch PT2E)
    eval_dir: Path | None = None  # --eval DIR


@dataclass
class ExportOptions:
    opset: int | None = None  # ONNX opset (None -> onnx target's default)
    channels_last: bool = False  # NHWC inputs (and NHWC spatial outputs)
    image_input: bool = False  # Core ML ImageType input with mean/std folded in
    class_labels: list[str] | None = None  # Core ML metadata
    quant: QuantOptions = field(default_factory=QuantOptions)


@dataclass
class ExportContext:
    name: str  # model name (zoo name or user module name), used in OUT/<name>/
    model: torch.nn.Module  # deploy form for the target's layout, eval mode
    info: ModelInfo | None  # zoo metadata (None for a user's own module)
    example: torch.Tensor  # [1, 3, H, W] float32, NCHW
    img_size: int
    target: str  # "onnx" | "tflite" | "coreml"
    precision: str
    workdir: Path  # temporary folder; renamed to OUT/<name>/<target>-<precision>/ at the end
    options: ExportOptions
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    progress: Progress
    float_artifact: Path | None = None  # fp32 artifact (for quantizers that start from a float file)
    extras: dict[str, Any] = field(default_factory=dict)  # manifest fields added by adapters / quantizers
    output_names: tuple[str, ...] = ("logits",)
    output_shapes: tuple[tuple[int, ...], ...] = ()  # of the PyTorch network, NCHW
    input_name: str = "input"
    shared: dict[str, Any] = field(default_factory=dict)  # one dict per export() call, shared by its targets
    layout: str = "nchw"  # the deploy form's arrangement (Target.layout)

    @property
    def arithmetic(self) -> str:
        return deploy_arithmetic(self.precision)

    @property
    def exported_program(self) -> torch.export.ExportedProgram:
        """``torch.export`` of the NCHW-input network, made once per run and deploy layout and shared by the
        targets (stage "trace")."""
        ep = self.shared.get(self.program_key)
        if ep is None:
            ep = export_program(self.model, self.example, self.progress)
            self.shared[self.program_key] = ep
            self.shared["trace_seconds"] = self.progress.times.get("trace", 0.0)
        return ep

    @property
    def program_key(self) -> str:
        return f"exported_program/{self.layout}/{self.arithmetic}"

    @property
    def channels_last_outputs(self) -> list[int]:
        """Indices of the spatial (rank-4) outputs, which ``--channels-last`` turns NHWC too."""
        return [i for i, s in enumerate(self.output_shapes) if len(s) == 4]

    @property
    def example_io(self) -> torch.Tensor:
        """The example input in the artifact's own layout (NHWC with ``--channels-last``)."""
        if self.options.channels_last:
            return self.example.permute(0, 2, 3, 1).contiguous()
        return self.example

    def io_module(self) -> tuple[torch.nn.Module, bool]:
        """The network with its I/O layout applied, and whether it differs from ``self.model``."""
        if not self.options.channels_last:
            return self.model, False
        return ChannelsLastIO(self.model, self.channels_last_outputs).eval(), True


class ChannelsLastIO(torch.nn.Module):
    """NHWC input (and NHWC spatial outputs) around an NCHW network: the permutes cancel against the
    converters' own layout transposes instead of adding new ones."""

    def __init__(self, wrapped: torch.nn.Module, outputs: list[int]) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.outputs = list(outputs)

    def forward(self, x: torch.Tensor) -> Any:
        y = self.wrapped(x.permute(0, 3, 1, 2))
        if not self.outputs:
            return y
        ys = list(y) if isinstance(y, (tuple, list)) else [y]
        for i in self.outputs:
            ys[i] = ys[i].permute(0, 2, 3, 1)
        return type(y)(ys) if isinstance(y, (tuple, list)) else ys[0]


def export_program(module: torch.nn.Module, example: torch.Tensor, progress: Progress) -> torch.export.ExportedProgram:
    """``torch.export`` (non-strict) with the time recorded as the "trace" stage."""
    with progress.stage("trace", "torch.export"):
        return torch.export.export(module, (example,), strict=False)

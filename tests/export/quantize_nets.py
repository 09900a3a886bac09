"""Shared helpers for the quantization tests: a small network whose activations depend on the input, and
export contexts built the way the pipeline builds them (so one fp32 conversion serves many quantizations).

A randomly initialised network with BatchNorm's default statistics gives nearly constant logits, and any
quantization "passes" on it. Here BatchNorm statistics are re-estimated on natural photos, as the zoo does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge._progress import Progress
from edge.data import image_batch
from edge.export.context import ExportContext, ExportOptions, QuantOptions
from edge.export.numerics import VERIFY_SAMPLES, verification_inputs
from tests.export.nets import TinyNet

IMG = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def calibrated_tiny(seed: int = 0, attention: bool = True) -> TinyNet:
    """TinyNet (conv/BN/hardswish/relu/depthwise + LayerNorm/attention/GELU) with input-dependent BN statistics."""
    torch.manual_seed(seed)
    net = TinyNet(attention=attention)
    batch, _ = image_batch(32, IMG, MEAN, STD, seed=3)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()
    return net


def shared_for(model: nn.Module, precision: str = "int8") -> dict[str, Any]:
    """What the pipeline's reference stage hands every target: verification images and PyTorch outputs."""
    x = verification_inputs(IMG, MEAN, STD, n=VERIFY_SAMPLES[precision])
    with torch.no_grad():
        ref = model(x)
    return {"example": x[:1].clone(), "inputs": x, "ref": [ref.numpy()], "output_names": ("logits",),
            "output_shapes": ((1, 10),)}


def make_ctx(model: nn.Module, target: str, precision: str, workdir: Path, shared: dict[str, Any],
             quant: QuantOptions | None = None, float_artifact: Path | None = None, **options: Any) -> ExportContext:
    workdir.mkdir(parents=True, exist_ok=True)
    return ExportContext(
        name="tiny", model=model, info=None, example=shared["example"], img_size=IMG, target=target,
        precision=precision, workdir=workdir, options=ExportOptions(quant=quant or QuantOptions(), **options),
        mean=MEAN, std=STD, progress=Progress(quiet=True), float_artifact=float_artifact,
        output_names=shared["output_names"], output_shapes=shared["output_shapes"], shared=shared,
    )


def gate(ctx: ExportContext, artifact: Path) -> dict[str, Any]:
    """The export's own numerics gate on an artifact (its runner, its thresholds, its I/O handling)."""
    from edge.export.pipeline import _io, check_artifact
    from edge.export.targets import TARGETS

    target = TARGETS[ctx.target]
    ins, outs = _io(target, artifact, ctx)
    io = {"inputs": ins, "outputs": outs, "preprocess": None, "image_input": None}
    return check_artifact(target, artifact, io, ctx.precision, ctx.shared["inputs"], ctx.shared["ref"],
                          ctx.shared["output_names"])


EVAL_CLASSES = ("astronaut", "chelsea", "coffee", "rocket")


def predict(net: nn.Module, path: Path) -> int:
    from edge.data import load_rgb, preprocess

    x = preprocess(load_rgb(path), IMG, MEAN, STD, 0.875, "bilinear")[None]
    with torch.no_grad():
        return int(net(x)[0].argmax())


def image_folder(net: nn.Module, root: Path) -> dict[str, int]:
    """An ImageFolder from the built-in photos: DIR/<photo name>/<3 views>, one corrupt file, class_index.json.

    Each class's index is the network's prediction on its full photo, so fp32 top-1 is above 0 by construction of
    the data (not of the code under test). Returns the class map."""
    import json

    from edge.data import builtin_images, load_rgb

    photos = {p.stem: p for p in builtin_images().paths}
    mapping = {}
    for c in EVAL_CLASSES:
        im = load_rgb(photos[c])
        (root / c).mkdir(parents=True)
        w, h = im.size
        im.save(root / c / "full.jpg")
        im.crop((0, 0, w // 2, h // 2)).save(root / c / "corner.jpg")
        im.crop((w // 3, h // 3, w, h)).transpose(0).save(root / c / "flip.png")
        mapping[c] = predict(net, root / c / "full.jpg")
    (root / "chelsea" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    (root / "class_index.json").write_text(json.dumps(mapping))
    return mapping


def direct_top1(predict_fn: Any, root: Path, mapping: dict[str, int]) -> float:
    """Top-1 counted by hand over the readable images, in ImageFolder order."""
    from edge.data import load_rgb

    hits = n = 0
    for c in EVAL_CLASSES:
        for p in sorted((root / c).iterdir()):
            if load_rgb(p) is None:
                continue
            hits += int(predict_fn(p) == mapping[c])
            n += 1
    return hits / n


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


class HeadWeights(torch.nn.Module):
    """Per-head projection with a batched [heads, C, D] weight, as EfficientFormer's last-stage attention has."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.w = torch.nn.Parameter(torch.randn(2, 8, 4) * 0.3)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # [B, N, 8]
        h = torch.matmul(t.unsqueeze(1), self.w)  # [B, 2, N, 4]
        return self.head(h.transpose(1, 2).flatten(2).mean(1))


class HeadSum(torch.nn.Module):
    """EfficientFormerV2's NHWC attention output projection: per-head tokens (B, h, N, c) times per-head weights
    (h, c, C), summed over the heads, plus a bias (the converter writes BATCH_MATMUL, RESHAPE, SUM, ADD)."""

    def __init__(self, heads: int = 4, c: int = 6, out: int = 12) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.heads = heads
        self.conv = torch.nn.Conv2d(3, heads * c, 3, 2, 1)
        self.w = torch.nn.Parameter(torch.randn(heads, c, out, generator=g) * 0.3)
        self.b = torch.nn.Parameter(torch.randn(out, generator=g) * 0.1)
        self.head = torch.nn.Linear(out, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        b, hc, hh, ww = f.shape
        t = f.permute(0, 2, 3, 1).reshape(b, hh * ww, self.heads, hc // self.heads).permute(0, 2, 1, 3)
        y = (t @ self.w).sum(dim=1) + self.b  # (B, N, out)
        return self.head(torch.relu(y).mean(1))


class PerHeadProjection(torch.nn.Module):
    """Tokens (N, C) times per-head weights (h, C, d) -> (h, N, d): a BATCH_MATMUL with a constant right operand."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t @ self.weight


class HeadProjection(torch.nn.Module):
    """EfficientFormerV2's NHWC per-head projections (query and key, each a ``PerHeadProjection``), then talking
    heads: a constant (h, h) mixing matrix on the left (a constant left operand), attention scores between two
    activations, and a linear head."""

    def __init__(self, heads: int = 4, c: int = 12, d: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.conv = torch.nn.Conv2d(3, c, 3, 2, 1)
        self.q = PerHeadProjection(torch.randn(heads, c, d, generator=g) * 0.3)
        self.k = PerHeadProjection(torch.randn(heads, c, d, generator=g) * 0.3)
        self.heads = heads
        self.mix = torch.nn.Parameter(torch.eye(heads) + torch.randn(heads, heads, generator=g) * 0.2)
        self.head = torch.nn.Linear(heads * d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one image at a time: the exported graph (batch 1) has the zoo's 2-D token matrix
        return torch.cat([self.one(x[i:i + 1]) for i in range(x.shape[0])])

    def one(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        _, c, hh, ww = f.shape
        t = f.permute(0, 2, 3, 1).reshape(hh * ww, c)
        q, k = self.q(t), self.k(t)  # (h, N, d)
        scores = (self.mix @ (q @ k.transpose(-1, -2)).reshape(self.heads, -1)).reshape(-1, hh * ww, hh * ww)
        y = torch.softmax(scores, -1) @ q  # (h, N, d)
        return self.head(y.mean(1).reshape(1, -1))


DEQUANTIZED_INT8 = "int8 constant behind DEQUANTIZE"


def operand_kinds(path: Path, op_name: str = "BATCH_MATMUL") -> list[tuple[str, str]]:
    """(left, right) operand of each ``op_name`` in a .tflite file (a conv's: input, weights): "float" (computed in
    float, or an activation dequantized in front of the op), "int8" (an int8 activation), "int8 constant" (read by
    the op itself) or ``DEQUANTIZED_INT8`` (stored int8, computed in float)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    sg = model.subgraphs[0]
    code = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    producer = {int(o): op for op in sg.operators for o in op.outputs}

    def kind(i: int) -> str:
        t, p = sg.tensors[i], producer.get(i)
        if p is not None and code[p.opcodeIndex] == schema.BuiltinOperator.DEQUANTIZE and p.inputs[0] not in producer:
            return DEQUANTIZED_INT8 if sg.tensors[int(p.inputs[0])].type == schema.TensorType.INT8 else "float"
        if t.type == schema.TensorType.INT8:
            return "int8 constant" if i not in producer else "int8"
        return "float"

    return [(kind(int(op.inputs[0])), kind(int(op.inputs[1]))) for op in sg.operators
            if code[op.opcodeIndex] == getattr(schema.BuiltinOperator, op_name)]

"""One kernel per MIL op type, all alike, registered in ``KERNELS``.

Each kernel declares its inputs in the decorator: ``T()`` is a tensor (a float32 / integer / bool
``torch.Tensor``), ``Ts()`` a list of tensors, ``V()`` a plain Python value (int, float, bool, str or
a nested list, read from a const). Passing a default makes an input optional: coremltools' loader does
NOT fill optional inputs, so the defaults here are the MIL spec's defaults (``None`` where the default
depends on the other inputs; the kernel fills it then). The body is the computation, with torch
functional ops in float32. Casting each result to its declared MIL dtype (and rounding fp16 results)
is the interpreter's job, not the kernel's, so every kernel stays small.

Semantics follow the op documentation in ``coremltools/converters/mil/mil/ops/defs`` (iOS15..iOS18);
where ops of several opset versions differ in their inputs, one kernel takes the union.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REQUIRED = object()


@dataclass(frozen=True)
class In:
    """One declared input of a kernel."""

    kind: str  # "tensor" | "tensors" | "value"
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def T(default: Any = REQUIRED) -> In:
    """A tensor input (``T(None)``: optional, ``None`` when absent)."""
    return In("tensor", default)


def Ts() -> In:
    """A list of tensors (concat, stack, einsum values)."""
    return In("tensors")


def V(default: Any = REQUIRED) -> In:
    """A Python value read from a const (axes, strides, modes, flags)."""
    return In("value", default)


@dataclass(frozen=True)
class Kernel:
    op_type: str
    fn: Callable[..., Any]
    inputs: dict[str, In] = field(default_factory=dict)


KERNELS: dict[str, Kernel] = {}


def kernel(*op_types: str, **inputs: In) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the kernel of ``op_types`` with the declared inputs."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op_type in op_types:
            if op_type in KERNELS:
                raise ValueError(f"two kernels for MIL op {op_type!r}")
            KERNELS[op_type] = Kernel(op_type, fn, dict(inputs))
        return fn

    return register


# ---------------------------------------------------------------- helpers


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _axes(axes: list[int] | int | None, rank: int) -> list[int]:
    if axes is None:
        return list(range(rank))
    if isinstance(axes, int):
        axes = [axes]
    return sorted(_axis(a, rank) for a in axes)


def _along(v: torch.Tensor, axis: int | None, rank: int) -> torch.Tensor:
    """A per-axis vector (quantization scale / zero point) shaped to broadcast against a rank-``rank`` tensor."""
    if v.dim() == 0 or axis is None:
        return v
    shape = [1] * rank
    shape[_axis(axis, rank)] = -1
    return v.reshape(shape)


def _same_pads(size: list[int], kernel_: list[int], strides: list[int], dilations: list[int],
               lower: bool) -> list[int]:
    """MIL ``same`` / ``same_lower`` padding as [d0_begin, d0_end, d1_begin, ...]."""
    pads = []
    for i, k, s, d in zip(size, kernel_, strides, dilations):
        ek = (k - 1) * d + 1
        total = max(0, s * math.ceil(i / s) - i + ek - s)
        small, big = total // 2, total - total // 2
        pads += [big, small] if lower else [small, big]
    return pads


def _spatial_pads(pad_type: str, pad: list[int] | None, size: list[int], kernel_: list[int],
                  strides: list[int], dilations: list[int]) -> list[int]:
    n = len(size)
    if pad_type == "custom":
        return list(pad) if pad is not None else [0] * 2 * n
    if pad_type == "valid":
        return [0] * 2 * n
    if pad_type in ("same", "same_lower"):
        return _same_pads(size, kernel_, strides, dilations, lower=pad_type == "same_lower")
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _torch_pad(pads: list[int]) -> list[int]:
    """MIL pads [d0_begin, d0_end, d1_begin, d1_end, ...] -> torch F.pad order (last dimension first)."""
    out: list[int] = []
    for i in range(len(pads) // 2 - 1, -1, -1):
        out += [pads[2 * i], pads[2 * i + 1]]
    return out


def _lerp_axis(x: torch.Tensor, coords: torch.Tensor, axis: int) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``axis`` at float ``coords`` (clamped to the edges)."""
    n = x.shape[axis]
    coords = coords.clamp(0, n - 1)
    i0 = coords.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = [1] * x.dim()
    shape[axis] = -1
    w = (coords - i0).reshape(shape).to(x.dtype)
    return x.index_select(axis, i0) * (1 - w) + x.index_select(axis, i1) * w


def _grid(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    """Input positions sampled for each output index, per MIL's resize_bilinear sampling modes.

    ``ASYMMETRIC`` (i * n_in / n_out) is upsample_bilinear's align_corners=False, half_pixel_centers=False.
    """
    i = torch.arange(n_out, dtype=torch.float64)
    if mode == "ALIGN_CORNERS" and n_out == 1:
        return torch.full((1,), (n_in - 1) / 2, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        return i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    if mode == "UNALIGN_CORNERS":  # half-pixel centres
        return (i + 0.5) * (n_in / n_out) - 0.5
    if mode == "DEFAULT":
        return i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    if mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        return 0.5 * delta + i * delta
    if mode == "ASYMMETRIC":
        return i * (n_in / n_out)
    raise ValueError(f"unknown sampling mode {mode!r}")


def _bilinear(x: torch.Tensor, h_out: int, w_out: int, mode: str) -> torch.Tensor:
    h_in, w_in = x.shape[-2], x.shape[-1]
    y = _lerp_axis(x, _grid(h_in, h_out, mode), x.dim() - 2)
    return _lerp_axis(y, _grid(w_in, w_out, mode), x.dim() - 1)


def _long(t: torch.Tensor, size: int) -> torch.Tensor:
    """Indices as int64 with negative values wrapped (MIL allows -D <= i < D)."""
    t = t.long()
    return torch.where(t < 0, t + size, t)


# ---------------------------------------------------------------- elementwise binary


@kernel("add", x=T(), y=T())
def add(x, y):
    return x + y


@kernel("sub", x=T(), y=T())
def sub(x, y):
    return x - y


@kernel("mul", x=T(), y=T())
def mul(x, y):
    return x * y


@kernel("real_div", x=T(), y=T())
def real_div(x, y):
    return x.float() / y.float()


@kernel("floor_div", x=T(), y=T())
def floor_div(x, y):
    return torch.div(x, y, rounding_mode="floor")


@kernel("mod", x=T(), y=T())
def mod(x, y):
    return torch.remainder(x, y)


@kernel("pow", x=T(), y=T())
def pow_(x, y):
    return torch.pow(x, y)


@kernel("maximum", x=T(), y=T())
def maximum(x, y):
    return torch.maximum(x, y)


@kernel("minimum", x=T(), y=T())
def minimum(x, y):
    return torch.minimum(x, y)


@kernel("equal", x=T(), y=T())
def equal(x, y):
    return x == y


@kernel("not_equal", x=T(), y=T())
def not_equal(x, y):
    return x != y


@kernel("greater", x=T(), y=T())
def greater(x, y):
    return x > y


@kernel("greater_equal", x=T(), y=T())
def greater_equal(x, y):
    return x >= y


@kernel("less", x=T(), y=T())
def less(x, y):
    return x < y


@kernel("less_equal", x=T(), y=T())
def less_equal(x, y):
    return x <= y


@kernel("logical_and", x=T(), y=T())
def logical_and(x, y):
    return torch.logical_and(x, y)


@kernel("logical_or", x=T(), y=T())
def logical_or(x, y):
    return torch.logical_or(x, y)


@kernel("select", cond=T(), a=T(), b=T())
def select(cond, a, b):
    return torch.where(cond.bool(), a, b)


# ---------------------------------------------------------------- elementwise unary


@kernel("identity", x=T())
def identity(x):
    return x


@kernel("abs", x=T())
def abs_(x):
    return torch.abs(x)


@kernel("sign", x=T())
def sign(x):
    return torch.sign(x)


@kernel("square", x=T())
def square(x):
    return x * x


@kernel("sqrt", x=T())
def sqrt(x):
    return torch.sqrt(x)


@kernel("rsqrt", x=T(), epsilon=V(1e-12))
def rsqrt(x, epsilon):
    return torch.rsqrt(x + epsilon)


@kernel("inverse", x=T(), epsilon=V(1e-4))
def inverse(x, epsilon):
    return 1.0 / (x + epsilon)


@kernel("exp", x=T())
def exp(x):
    return torch.exp(x)


@kernel("exp2", x=T())
def exp2(x):
    return torch.exp2(x)


@kernel("log", x=T(), epsilon=V(1e-45))
def log(x, epsilon):
    return torch.log(x + epsilon)


@kernel("erf", x=T())
def erf(x):
    return torch.erf(x)


@kernel("tanh", x=T())
def tanh(x):
    return torch.tanh(x)


@kernel("sin", x=T())
def sin(x):
    return torch.sin(x)


@kernel("cos", x=T())
def cos(x):
    return torch.cos(x)


@kernel("floor", x=T())
def floor(x):
    return torch.floor(x)


@kernel("ceil", x=T())
def ceil(x):
    return torch.ceil(x)


@kernel("round", x=T())
def round_(x):
    return torch.round(x)  # half to even, like np.round in MIL's value inference


@kernel("logical_not", x=T())
def logical_not(x):
    return torch.logical_not(x)


@kernel("cast", x=T(), dtype=V())
def cast(x, dtype):
    # float -> int truncates toward zero (numpy astype), bool is x != 0; the interpreter stores the result
    if dtype == "bool":
        return x != 0
    if dtype.startswith(("int", "uint")):
        return torch.trunc(x.double()).long() if x.is_floating_point() else x.long()
    return x.float()


# ---------------------------------------------------------------- activations


@kernel("relu", x=T())
def relu(x):
    return F.relu(x)


@kernel("relu6", x=T())
def relu6(x):
    return x.clamp(0.0, 6.0)


@kernel("sigmoid", x=T())
def sigmoid(x):
    return torch.sigmoid(x)


@kernel("sigmoid_hard", x=T(), alpha=V(0.2), beta=V(0.5))
def sigmoid_hard(x, alpha, beta):
    return (alpha * x + beta).clamp(0.0, 1.0)


@kernel("thresholded_relu", x=T(), alpha=V(1.0))
def thresholded_relu(x, alpha):
    return torch.where(x >= alpha, x, torch.zeros_like(x))  # keeps x == alpha (MIL: x >= alpha)


@kernel("clip", x=T(), alpha=V(), beta=V())
def clip(x, alpha, beta):
    return x.clamp(min=alpha).clamp(max=beta)  # min(max(x, alpha), beta), also when alpha > beta


@kernel("leaky_relu", x=T(), alpha=V(0.01))
def leaky_relu(x, alpha):
    return torch.where(x >= 0, x, alpha * x)


@kernel("elu", x=T(), alpha=V(1.0))
def elu(x, alpha):
    return torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@kernel("prelu", x=T(), alpha=T())
def prelu(x, alpha):
    return torch.where(x >= 0, x, _along(alpha, 1, x.dim()) * x)


@kernel("linear_activation", x=T(), alpha=V(), beta=V(0.0))
def linear_activation(x, alpha, beta):
    return alpha * x + beta


@kernel("scaled_tanh", x=T(), alpha=V(1.0), beta=V(1.0))
def scaled_tanh(x, alpha, beta):
    return alpha * torch.tanh(beta * x)


@kernel("silu", x=T())
def silu(x):
    return F.silu(x)


@kernel("softplus", x=T())
def softplus(x):
    return F.softplus(x)


@kernel("softsign", x=T())
def softsign(x):
    return x / (1 + x.abs())


@kernel("gelu", x=T(), mode=V("EXACT"))
def gelu(x, mode):
    if mode == "EXACT":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


@kernel("softmax", x=T(), axis=V(-1))
def softmax(x, axis):
    return torch.softmax(x, dim=axis)


# ---------------------------------------------------------------- normalisation


@kernel("batch_norm", x=T(), mean=T(), variance=T(), gamma=T(None), beta=T(None), epsilon=V(1e-5))
def batch_norm(x, mean, variance, gamma, beta, epsilon):
    return F.batch_norm(x, mean, variance, gamma, beta, False, 0.0, epsilon)


@kernel("layer_norm", x=T(), axes=V(None), gamma=T(None), beta=T(None), epsilon=V(1e-5))
def layer_norm(x, axes, gamma, beta, epsilon):
    axes = _axes(axes, x.dim())
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + epsilon)
    affine_shape = [x.shape[i] if i in axes else 1 for i in range(x.dim())]
    if gamma is not None:
        y = y * gamma.reshape(affine_shape)
    if beta is not None:
        y = y + beta.reshape(affine_shape)
    return y


@kernel("instance_norm", x=T(), gamma=T(None), beta=T(None), epsilon=V(1e-5))
def instance_norm(x, gamma, beta, epsilon):
    return F.instance_norm(x, weight=gamma, bias=beta, eps=epsilon)


@kernel("l2_norm", x=T(), epsilon=V(1e-6))
def l2_norm(x, epsilon):
    # over the last 3 dimensions; leading dimensions are batch
    dims = list(range(max(0, x.dim() - 3), x.dim()))
    return x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + epsilon)


# ---------------------------------------------------------------- linear algebra


@kernel("linear", x=T(), weight=T(), bias=T(None))
def linear(x, weight, bias):
    return F.linear(x, weight, bias)


@kernel("matmul", x=T(), y=T(), transpose_x=V(False), transpose_y=V(False))
def matmul(x, y, transpose_x, transpose_y):
    if transpose_x:
        x = x.transpose(-1, -2)
    if transpose_y:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@kernel("einsum", values=Ts(), equation=V())
def einsum(values, equation):
    return torch.einsum(equation, *values)


@kernel("conv", x=T(), weight=T(), bias=T(None), strides=V(None), pad_type=V("valid"), pad=V(None),
        dilations=V(None), groups=V(1))
def conv(x, weight, bias, strides, pad_type, pad, dilations, groups):
    n = x.dim() - 2
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    pads = _spatial_pads(pad_type, pad, list(x.shape[2:]), list(weight.shape[2:]), strides, dilations)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    if all(pads[2 * i] == pads[2 * i + 1] for i in range(n)):  # symmetric: let the conv pad (no copy)
        return fn(x, weight, bias, stride=strides, padding=pads[::2], dilation=dilations, groups=groups)
    return fn(F.pad(x, _torch_pad(pads)), weight, bias, stride=strides, dilation=dilations, groups=groups)


@kernel("conv_transpose", x=T(), weight=T(), bias=T(None), pad=V(None), output_shape=V(None),
        pad_type=V("valid"), strides=V(None), dilations=V(None), groups=V(1))
def conv_transpose(x, weight, bias, pad, output_shape, pad_type, strides, dilations, groups):
    # weight is [C_in, C_out / groups, k...] as in torch; compute the full ("valid") output, then crop
    n = x.dim() - 2
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    y = fn(x, weight, bias, stride=strides, dilation=dilations, groups=groups)
    full = list(y.shape[2:])
    if pad_type == "custom" and pad is not None:
        crops = list(pad)
    elif pad_type in ("same", "same_lower"):
        crops = []
        for i, size in enumerate(full):
            total = size - x.shape[2 + i] * strides[i]
            small, big = total // 2, total - total // 2
            crops += [big, small] if pad_type == "same_lower" else [small, big]
    else:
        crops = [0] * 2 * n
    if output_shape is not None:  # explicit output size: crop the end to fit
        target = list(output_shape)[-n:]
        crops = [c for i in range(n) for c in (crops[2 * i], full[i] - crops[2 * i] - target[i])]
    index = [slice(None), slice(None)] + [slice(crops[2 * i], full[i] - crops[2 * i + 1]) for i in range(n)]
    return y[tuple(index)]


# ---------------------------------------------------------------- pooling


def _pool_pads(x, kernel_sizes, strides, pad_type, pad):
    n = x.dim() - 2
    strides = strides or [1] * n
    pads = _spatial_pads(pad_type, pad, list(x.shape[2:]), kernel_sizes, strides, [1] * n)
    return strides, _torch_pad(pads)


@kernel("max_pool", x=T(), kernel_sizes=V(), strides=V(None), pad_type=V("valid"), pad=V(None), ceil_mode=V(False))
def max_pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    strides, tpad = _pool_pads(x, kernel_sizes, strides, pad_type, pad)
    x = F.pad(x, tpad, value=-math.inf)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[x.dim() - 2]
    return fn(x, kernel_sizes, strides, ceil_mode=ceil_mode)


@kernel("avg_pool", x=T(), kernel_sizes=V(), strides=V(None), pad_type=V("valid"), pad=V(None), ceil_mode=V(False),
        exclude_padding_from_average=V(False))
def avg_pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, exclude_padding_from_average):
    strides, tpad = _pool_pads(x, kernel_sizes, strides, pad_type, pad)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[x.dim() - 2]
    total = fn(F.pad(x, tpad), kernel_sizes, strides, ceil_mode=ceil_mode)
    if not exclude_padding_from_average or not any(tpad):
        return total
    ones = F.pad(torch.ones_like(x[:1, :1]), tpad)
    return total / fn(ones, kernel_sizes, strides, ceil_mode=ceil_mode)


# ---------------------------------------------------------------- reductions


def _reduce(fn):
    def reduce(x, axes, keep_dims):
        axes = _axes(axes, x.dim())
        return fn(x, axes, keep_dims)

    return reduce


def _reduce_max(x, axes, keep):
    return torch.amax(x, dim=axes, keepdim=keep)


def _reduce_min(x, axes, keep):
    return torch.amin(x, dim=axes, keepdim=keep)


def _reduce_prod(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = torch.prod(x, dim=a, keepdim=keep)
    return x


_REDUCERS = {
    "reduce_mean": lambda x, a, k: torch.mean(x, dim=a, keepdim=k),
    "reduce_sum": lambda x, a, k: torch.sum(x, dim=a, keepdim=k),
    "reduce_max": _reduce_max,
    "reduce_min": _reduce_min,
    "reduce_prod": _reduce_prod,
    "reduce_l1_norm": lambda x, a, k: torch.sum(x.abs(), dim=a, keepdim=k),
    "reduce_l2_norm": lambda x, a, k: torch.sqrt(torch.sum(x * x, dim=a, keepdim=k)),
    "reduce_sum_square": lambda x, a, k: torch.sum(x * x, dim=a, keepdim=k),
    "reduce_log_sum": lambda x, a, k: torch.log(torch.sum(x, dim=a, keepdim=k)),
    "reduce_log_sum_exp": lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k),
}
for _name, _fn in _REDUCERS.items():
    kernel(_name, x=T(), axes=V(None), keep_dims=V(False))(_reduce(_fn))


@kernel("reduce_argmax", x=T(), axis=V(-1), keep_dims=V(False), output_dtype=V("int32"))
def reduce_argmax(x, axis, keep_dims, output_dtype):
    return torch.argmax(x, dim=axis, keepdim=keep_dims)


@kernel("reduce_argmin", x=T(), axis=V(-1), keep_dims=V(False), output_dtype=V("int32"))
def reduce_argmin(x, axis, keep_dims, output_dtype):
    return torch.argmin(x, dim=axis, keepdim=keep_dims)


# ---------------------------------------------------------------- shape and layout


@kernel("reshape", x=T(), shape=V())
def reshape(x, shape):
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]  # 0 copies that input dimension
    return x.reshape(shape)


@kernel("transpose", x=T(), perm=V())
def transpose(x, perm):
    return x.permute(*perm)


@kernel("squeeze", x=T(), axes=V(None))
def squeeze(x, axes):
    if axes is None:
        return x.squeeze()
    keep = [s for i, s in enumerate(x.shape) if i not in _axes(axes, x.dim())]
    return x.reshape(keep)


@kernel("expand_dims", x=T(), axes=V())
def expand_dims(x, axes):
    rank = x.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@kernel("flatten2d", x=T(), axis=V(1))
def flatten2d(x, axis):
    axis = _axis(axis, x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


@kernel("concat", values=Ts(), axis=V(), interleave=V(False))
def concat(values, axis, interleave):
    if not interleave:
        return torch.cat(values, dim=axis)
    axis = _axis(axis, values[0].dim())
    stacked = torch.stack(values, dim=axis + 1)  # [.., C, n, ..] -> c0 of each, then c1 of each
    return stacked.reshape(*values[0].shape[:axis], -1, *values[0].shape[axis + 1:])


@kernel("stack", values=Ts(), axis=V())
def stack(values, axis):
    return torch.stack(values, dim=axis)


@kernel("split", x=T(), num_splits=V(None), split_sizes=V(None), axis=V())
def split(x, num_splits, split_sizes, axis):
    if split_sizes is None:
        split_sizes = [x.shape[axis] // num_splits] * num_splits
    return tuple(torch.split(x, list(split_sizes), dim=axis))


@kernel("slice_by_index", x=T(), begin=V(), end=V(), stride=V(None), begin_mask=V(None), end_mask=V(None),
        squeeze_mask=V(None))
def slice_by_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    rank = x.dim()
    stride = stride or [1] * rank
    begin_mask = begin_mask or [False] * rank
    end_mask = end_mask or [False] * rank
    squeeze_mask = squeeze_mask or [False] * rank
    for d in range(rank):
        if squeeze_mask[d]:
            x = x.narrow(d, _axis(begin[d], x.shape[d]), 1)
            continue
        s = slice(None if begin_mask[d] else begin[d], None if end_mask[d] else end[d], stride[d])
        idx = range(x.shape[d])[s]
        if stride[d] > 0:
            x = x.narrow(d, idx.start, len(idx)) if stride[d] == 1 else x[(slice(None),) * d + (s,)]
        else:
            x = x.index_select(d, torch.tensor(list(idx), dtype=torch.long))
    keep = [n for d, n in enumerate(x.shape) if not squeeze_mask[d]]
    return x.reshape(keep)


@kernel("slice_by_size", x=T(), begin=V(), size=V())
def slice_by_size(x, begin, size):
    for d, (b, n) in enumerate(zip(begin, size)):
        b = _axis(b, x.shape[d])
        x = x.narrow(d, b, x.shape[d] - b if n == -1 else n)
    return x


@kernel("gather", x=T(), indices=T(), axis=V(0), batch_dims=V(0), validate_indices=V(False))
def gather(x, indices, axis, batch_dims, validate_indices):
    axis = _axis(axis, x.dim())
    if batch_dims > 0:  # peel one batch dimension at a time
        return torch.stack([gather(x[b], indices[b], axis - 1, batch_dims - 1, False) for b in range(x.shape[0])])
    idx = _long(indices, x.shape[axis])
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])


@kernel("gather_along_axis", x=T(), indices=T(), axis=V(0), validate_indices=V(False))
def gather_along_axis(x, indices, axis, validate_indices):
    axis = _axis(axis, x.dim())
    return torch.gather(x, axis, _long(indices, x.shape[axis]))


@kernel("gather_nd", x=T(), indices=T(), batch_dims=V(0), validate_indices=V(False))
def gather_nd(x, indices, batch_dims, validate_indices):
    if batch_dims > 0:
        return torch.stack([gather_nd(x[b], indices[b], batch_dims - 1, False) for b in range(x.shape[0])])
    k = indices.shape[-1]
    flat = indices.reshape(-1, k).long()
    picked = x[tuple(_long(flat[:, j], x.shape[j]) for j in range(k))]
    return picked.reshape(*indices.shape[:-1], *x.shape[k:])


@kernel("pad", x=T(), pad=V(), mode=V("constant"), constant_val=V(0.0))
def pad(x, pad, mode, constant_val):
    tpad = _torch_pad(list(pad))
    if mode == "constant":
        return F.pad(x, tpad, value=float(constant_val))
    # torch's reflect/replicate pad at most the last 3 dims of a [N, C, ...] tensor: drop leading zero pads
    pad = list(pad)
    while len(pad) > 2 and pad[0] == 0 and pad[1] == 0:
        pad = pad[2:]
    tpad = _torch_pad(pad)
    n = len(pad) // 2
    lead = x.shape[: x.dim() - n]
    y = x.reshape(1, -1, *x.shape[x.dim() - n:])
    y = F.pad(y, tpad, mode={"reflect": "reflect", "replicate": "replicate"}[mode])
    return y.reshape(*lead, *y.shape[2:])


@kernel("tile", x=T(), reps=V())
def tile(x, reps):
    return x.repeat(*reps)


@kernel("shape", x=T())
def shape(x):
    return torch.tensor(list(x.shape), dtype=torch.int32)


@kernel("fill", shape=V(), value=V(0.0))
def fill(shape, value):
    return torch.full(list(shape), value)


@kernel("range_1d", start=V(), end=V(), step=V())
def range_1d(start, end, step):
    return torch.arange(start, end, step)


@kernel("pixel_shuffle", x=T(), upscale_factor=V())
def pixel_shuffle(x, upscale_factor):
    return F.pixel_shuffle(x, upscale_factor)


@kernel("pixel_unshuffle", x=T(), downscale_factor=V())
def pixel_unshuffle(x, downscale_factor):
    return F.pixel_unshuffle(x, downscale_factor)


@kernel("depth_to_space", x=T(), block_size=V())
def depth_to_space(x, block_size):
    # DCR order (TensorFlow / ONNX default): depth is split as [block, block, C]
    n, c, h, w = x.shape
    b = block_size
    y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@kernel("space_to_depth", x=T(), block_size=V())
def space_to_depth(x, block_size):
    n, c, h, w = x.shape
    b = block_size
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


# ---------------------------------------------------------------- resizing


@kernel("upsample_bilinear", x=T(), scale_factor_height=V(1), scale_factor_width=V(1), align_corners=V(True),
        half_pixel_centers=V(None))
def upsample_bilinear(x, scale_factor_height, scale_factor_width, align_corners, half_pixel_centers):
    h_out = int(math.floor(x.shape[-2] * scale_factor_height))
    w_out = int(math.floor(x.shape[-1] * scale_factor_width))
    if half_pixel_centers is None:
        half_pixel_centers = not align_corners
    mode = "STRICT_ALIGN_CORNERS" if align_corners else "UNALIGN_CORNERS" if half_pixel_centers else "ASYMMETRIC"
    return _bilinear(x, h_out, w_out, mode)


@kernel("resize_bilinear", x=T(), target_size_height=V(1), target_size_width=V(1), sampling_mode=V("DEFAULT"))
def resize_bilinear(x, target_size_height, target_size_width, sampling_mode):
    return _bilinear(x, target_size_height, target_size_width, sampling_mode)


def _nearest(x: torch.Tensor, h_out: int, w_out: int) -> torch.Tensor:
    h_in, w_in = x.shape[-2], x.shape[-1]
    hi = (torch.arange(h_out, dtype=torch.float64) * (h_in / h_out)).floor().long().clamp(max=h_in - 1)
    wi = (torch.arange(w_out, dtype=torch.float64) * (w_in / w_out)).floor().long().clamp(max=w_in - 1)
    return x.index_select(x.dim() - 2, hi).index_select(x.dim() - 1, wi)


@kernel("upsample_nearest_neighbor", x=T(), scale_factor_height=V(1), scale_factor_width=V(1))
def upsample_nearest_neighbor(x, scale_factor_height, scale_factor_width):
    return _nearest(x, int(math.floor(x.shape[-2] * scale_factor_height)),
                    int(math.floor(x.shape[-1] * scale_factor_width)))


@kernel("resize_nearest_neighbor", x=T(), target_size_height=V(), target_size_width=V())
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    return _nearest(x, target_size_height, target_size_width)


# ---------------------------------------------------------------- attention (iOS18)


@kernel("scaled_dot_product_attention", query=T(), key=T(), value=T(), attn_mask=T(None))
def scaled_dot_product_attention(query, key, value, attn_mask):
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(~attn_mask, -math.inf)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)


# ---------------------------------------------------------------- quantization (iOS17 activations)


@kernel("quantize", input=T(), zero_point=T(None), scale=T(), axis=V(None), output_dtype=V())
def quantize(input, zero_point, scale, axis, output_dtype):
    # clip(round_half_even(x / scale) + zero_point) into the int8 / uint8 range
    lo, hi = (-128, 127) if output_dtype == "int8" else (0, 255)
    q = torch.round(input / _along(scale, axis, input.dim()))
    if zero_point is not None:
        q = q + _along(zero_point.float(), axis, input.dim())
    return q.clamp(lo, hi)


@kernel("dequantize", input=T(), zero_point=T(None), scale=T(), axis=V(None))
def dequantize(input, zero_point, scale, axis):
    q = input.float()
    if zero_point is not None:
        q = q - _along(zero_point.float(), axis, input.dim())
    return q * _along(scale, axis, input.dim())


# ---------------------------------------------------------------- compressed weights (constexpr_*)


@kernel("constexpr_affine_dequantize", quantized_data=T(), zero_point=T(), scale=T(), axis=V())
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    rank = quantized_data.dim()
    return (quantized_data.float() - _along(zero_point.float(), axis, rank)) * _along(scale, axis, rank)


@kernel("constexpr_blockwise_shift_scale", data=T(), scale=T(), offset=T(None))
def constexpr_blockwise_shift_scale(data, scale, offset):
    data = data.float()
    for axis, (d, s) in enumerate(zip(data.shape, scale.shape)):
        if d != s:  # each scale covers a block of d // s elements along this axis
            scale = scale.repeat_interleave(d // s, dim=axis)
            offset = offset.repeat_interleave(d // s, dim=axis) if offset is not None else None
    if offset is not None:
        data = data - offset.float()
    return data * scale


def _unpack_bits(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    """Little-endian bit fields (LSB first within each byte), as MIL packs sub-byte data."""
    bits = np.unpackbits(packed.numpy().astype(np.uint8), bitorder="little")[: count * nbits]
    weights = (1 << np.arange(nbits)).astype(np.int64)
    return torch.from_numpy(bits.reshape(count, nbits).astype(np.int64) @ weights)


@kernel("constexpr_lut_to_dense", indices=T(), lut=T(), shape=V(None), vector_axis=V(None))
def constexpr_lut_to_dense(indices, lut, shape, vector_axis):
    if shape is not None:  # iOS16: packed uint8 indices into a 1-D lut
        nbits = int(math.log2(lut.shape[0]))
        count = int(np.prod(shape))
        return lut[_unpack_bits(indices, nbits, count)].reshape(list(shape))
    # iOS18: indices (already unpacked on load) index per-block LUTs of shape [*blocks, 2**nbits, vector_size]
    rank = indices.dim()
    idx = indices.long()
    out = torch.empty(*idx.shape, lut.shape[-1], dtype=lut.dtype)
    block = [idx.shape[d] // lut.shape[d] for d in range(rank)]
    for pos in np.ndindex(*lut.shape[:rank]):
        region = tuple(slice(p * b, (p + 1) * b) for p, b in zip(pos, block))
        out[region] = lut[pos][idx[region]]
    if lut.shape[-1] == 1:
        return out.squeeze(-1)
    axis = _axis(vector_axis, rank)  # vector palettization: each index expands to vector_size elements
    out = out.movedim(-1, axis + 1)
    return out.reshape(*idx.shape[:axis], -1, *idx.shape[axis + 1:])


@kernel("constexpr_sparse_to_dense", nonzero_data=T(), mask=T(), shape=V(None))
def constexpr_sparse_to_dense(nonzero_data, mask, shape):
    if shape is not None:  # iOS16: bit-packed mask
        count = int(np.prod(shape))
        flags = _unpack_bits(mask, 1, count).bool()
        out_shape = list(shape)
    else:  # iOS18: uint1 mask, unpacked on load to the output shape
        flags = mask.reshape(-1).bool()
        out_shape = list(mask.shape)
    out = torch.zeros(flags.numel(), dtype=nonzero_data.dtype)
    out[flags] = nonzero_data
    return out.reshape(out_shape)


@kernel("constexpr_cast", source_val=T(), output_dtype=V())
def constexpr_cast(source_val, output_dtype):
    return source_val.float()

"""The reference MIL interpreter: one test per op kernel, then whole converted programs against PyTorch.

Per-op tests build a one-op MIL program with coremltools' own builder (the same op classes, type inference
and defaults the converter uses), run it through the interpreter, and compare with an independent numpy /
torch computation of the op's documented semantics. Whole-program tests convert a small network with
coremltools (fp32, fp16, int8 weights) and compare the interpreter with PyTorch.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import Function, Program, types  # noqa: E402

from edge.errors import EdgeError  # noqa: E402
from edge.export import coreml_mil as cm  # noqa: E402
from edge.export.coreml_mil import ops  # noqa: E402

RNG = np.random.default_rng(0)
iOS16, iOS17, iOS18 = ct.target.iOS16, ct.target.iOS17, ct.target.iOS18
_MIL_DTYPES = {np.float32: types.fp32, np.float16: types.fp16, np.int32: types.int32, np.bool_: types.bool,
               np.int8: types.int8, np.uint8: types.uint8}


def r(*shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def ri(*shape, lo=0, hi=4):
    return RNG.integers(lo, hi, size=shape).astype(np.int32)


def build(fn, inputs: dict[str, np.ndarray], opset=iOS17) -> Program:
    """A one-function MIL program whose body is ``fn(**input_vars)``."""
    placeholders = {k: mb.placeholder(shape=v.shape, dtype=_MIL_DTYPES[v.dtype.type]) for k, v in inputs.items()}
    with Function(placeholders, opset_version=opset) as f:
        out = fn(**f.inputs)
        f.set_outputs(list(out) if isinstance(out, (tuple, list)) else [out])
    prog = Program()
    prog.add_function("main", f)
    return prog


def erf(x):
    return np.vectorize(math.erf)(x.astype(np.float64)).astype(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_conv(x, w, b, stride, pads_hw, dil=(1, 1), groups=1):
    """Explicit numpy padding ([top, bottom, left, right]), then an unpadded torch convolution."""
    xp = np.pad(x, ((0, 0), (0, 0), (pads_hw[0], pads_hw[1]), (pads_hw[2], pads_hw[3])))
    return F.conv2d(torch.from_numpy(xp), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                    stride=stride, dilation=dil, groups=groups).numpy()


def pack_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """Little-endian bit fields, LSB first in each byte (MIL's sub-byte packing), built independently."""
    bits = ((values.reshape(-1)[:, None].astype(np.int64) >> np.arange(nbits)) & 1).reshape(-1)
    return np.packbits(bits.astype(np.uint8), bitorder="little")


# ---------------------------------------------------------------- the per-op table
# id -> (inputs, build(**vars), reference(**arrays) -> array or tuple, opset, tolerance)

X = r(2, 3, 4)
Y = r(4)
IMG = r(1, 4, 7, 8)
W_CONV = r(6, 2, 3, 3, lo=-0.5, hi=0.5)
B6 = r(6)
W_LIN = r(5, 4)
B5 = r(5)
GAMMA4, BETA4 = r(4, lo=0.5, hi=1.5), r(4)
MEAN4, VAR4 = r(4), r(4, lo=0.5, hi=2.0)
QKV = r(1, 2, 5, 4)

POS = r(2, 3, 4, lo=0.1, hi=3.0)
XI, YI = ri(2, 3, lo=-7, hi=8), ri(2, 3, lo=1, hi=4) * np.array([1, -1, 1], np.int32)
BA, BB = RNG.random((2, 3)) > 0.5, RNG.random((2, 3)) > 0.5
LUT4 = r(4)
IDX2 = RNG.integers(0, 4, size=(3, 4)).astype(np.uint8)
MASK = RNG.random((3, 4)) > 0.5
NZ = r(int(MASK.sum()))
Q8 = RNG.integers(-128, 128, size=(3, 4)).astype(np.int8)
ZP3 = np.array([0, 3, -2], np.int8)
S3 = r(3, lo=0.01, hi=0.1)
S4 = r(4, lo=0.01, hi=0.1)


def _bn(x):
    c = (1, -1, 1, 1)
    return (x - MEAN4.reshape(c)) / np.sqrt(VAR4.reshape(c) + 1e-3) * GAMMA4.reshape(c) + BETA4.reshape(c)


def _ln(x, axes, gamma=None, beta=None, eps=1e-5):
    m = x.mean(axis=tuple(axes), keepdims=True)
    v = ((x - m) ** 2).mean(axis=tuple(axes), keepdims=True)
    y = (x - m) / np.sqrt(v + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    return y * gamma.reshape(shape) + beta.reshape(shape) if gamma is not None else y


def _bilinear_ref(x, h, w, align_corners):
    t = F.interpolate(torch.from_numpy(x), size=(h, w), mode="bilinear", align_corners=align_corners)
    return t.numpy()


def _attn(q, k, v):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def _lut18_case():
    idx = RNG.integers(0, 256, size=(4, 6)).astype(np.uint8)
    lut = r(2, 1, 256, 1)  # two LUTs: rows 0-1 use lut[0], rows 2-3 lut[1]
    dense = np.concatenate([lut[0, 0, idx[:2], 0], lut[1, 0, idx[2:], 0]])
    return idx, lut, dense


LUT18_IDX, LUT18, LUT18_DENSE = _lut18_case()
SPARSE18_MASK = (RNG.random((3, 4)) > 0.5).astype(types.np_uint1_dtype)
SPARSE18_NZ = r(int(SPARSE18_MASK.sum()))
BW_DATA = RNG.integers(-8, 8, size=(4, 6)).astype(np.int8)
BW_SCALE, BW_OFFSET = r(2, 3, lo=0.1, hi=1.0), RNG.integers(-2, 3, size=(2, 3)).astype(np.int8)


CASES = {
    # elementwise binary
    "add": ({"x": X, "y": Y}, lambda x, y: mb.add(x=x, y=y), lambda x, y: x + y),
    "sub": ({"x": X, "y": Y}, lambda x, y: mb.sub(x=x, y=y), lambda x, y: x - y),
    "mul": ({"x": X, "y": Y}, lambda x, y: mb.mul(x=x, y=y), lambda x, y: x * y),
    "real_div": ({"x": X, "y": POS[0, 0]}, lambda x, y: mb.real_div(x=x, y=y), lambda x, y: x / y),
    "floor_div": ({"x": XI, "y": YI}, lambda x, y: mb.floor_div(x=x, y=y), np.floor_divide),
    "mod": ({"x": XI, "y": YI}, lambda x, y: mb.mod(x=x, y=y), np.mod),
    "pow": ({"x": POS}, lambda x: mb.pow(x=x, y=np.float32(1.5)), lambda x: x**1.5),
    "maximum": ({"x": X, "y": Y}, lambda x, y: mb.maximum(x=x, y=y), np.maximum),
    "minimum": ({"x": X, "y": Y}, lambda x, y: mb.minimum(x=x, y=y), np.minimum),
    "equal": ({"x": XI, "y": YI}, lambda x, y: mb.equal(x=x, y=y), np.equal),
    "not_equal": ({"x": XI, "y": YI}, lambda x, y: mb.not_equal(x=x, y=y), np.not_equal),
    "greater": ({"x": XI, "y": YI}, lambda x, y: mb.greater(x=x, y=y), np.greater),
    "greater_equal": ({"x": XI, "y": XI[::-1].copy()}, lambda x, y: mb.greater_equal(x=x, y=y), np.greater_equal),
    "less": ({"x": XI, "y": YI}, lambda x, y: mb.less(x=x, y=y), np.less),
    "less_equal": ({"x": XI, "y": XI[::-1].copy()}, lambda x, y: mb.less_equal(x=x, y=y), np.less_equal),
    "logical_and": ({"x": BA, "y": BB}, lambda x, y: mb.logical_and(x=x, y=y), np.logical_and),
    "logical_or": ({"x": BA, "y": BB}, lambda x, y: mb.logical_or(x=x, y=y), np.logical_or),
    "logical_not": ({"x": BA}, lambda x: mb.logical_not(x=x), np.logical_not),
    "select": ({"c": BA, "a": X[0, :2, :3].copy(), "b": X[1, :2, :3].copy()},
               lambda c, a, b: mb.select(cond=c, a=a, b=b), lambda c, a, b: np.where(c, a, b)),
    # elementwise unary
    "identity": ({"x": X}, lambda x: mb.identity(x=x), lambda x: x),
    "abs": ({"x": X}, lambda x: mb.abs(x=x), np.abs),
    "sign": ({"x": X}, lambda x: mb.sign(x=x), np.sign),
    "square": ({"x": X}, lambda x: mb.square(x=x), np.square),
    "sqrt": ({"x": POS}, lambda x: mb.sqrt(x=x), np.sqrt),
    "rsqrt": ({"x": POS}, lambda x: mb.rsqrt(x=x), lambda x: 1 / np.sqrt(x + 1e-12)),
    "inverse": ({"x": POS}, lambda x: mb.inverse(x=x), lambda x: 1 / (x + 1e-4)),
    "exp": ({"x": X}, lambda x: mb.exp(x=x), np.exp),
    "exp2": ({"x": X}, lambda x: mb.exp2(x=x), np.exp2),
    "log": ({"x": POS}, lambda x: mb.log(x=x), np.log),
    "erf": ({"x": X}, lambda x: mb.erf(x=x), erf),
    "tanh": ({"x": X}, lambda x: mb.tanh(x=x), np.tanh),
    "sin": ({"x": X}, lambda x: mb.sin(x=x), np.sin),
    "cos": ({"x": X}, lambda x: mb.cos(x=x), np.cos),
    "floor": ({"x": X}, lambda x: mb.floor(x=x), np.floor),
    "ceil": ({"x": X}, lambda x: mb.ceil(x=x), np.ceil),
    "round": ({"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.4], np.float32)}, lambda x: mb.round(x=x), np.round),
    "cast-int32": ({"x": X * 3}, lambda x: mb.cast(x=x, dtype="int32"), lambda x: x.astype(np.int32)),
    "cast-bool": ({"x": np.array([0.0, 1.5, -2.0, 0.0], np.float32)}, lambda x: mb.cast(x=x, dtype="bool"),
                  lambda x: x != 0),
    "cast-fp16": ({"x": X * 1000}, lambda x: mb.cast(x=x, dtype="fp16"), lambda x: x.astype(np.float16)),
    # activations
    "relu": ({"x": X}, lambda x: mb.relu(x=x), lambda x: np.maximum(x, 0)),
    "relu6": ({"x": X * 5}, lambda x: mb.relu6(x=x), lambda x: np.clip(x, 0, 6)),
    "sigmoid": ({"x": X}, lambda x: mb.sigmoid(x=x), sigmoid),
    "sigmoid_hard": ({"x": X * 3}, lambda x: mb.sigmoid_hard(x=x, alpha=1 / 6, beta=0.5),
                     lambda x: np.clip(x / 6 + 0.5, 0, 1)),
    "thresholded_relu": ({"x": np.array([-3.5, -3.0, -2.9, 0.0, 1.0], np.float32)},
                         lambda x: mb.thresholded_relu(x=x, alpha=-3.0),
                         lambda x: np.array([0.0, -3.0, -2.9, 0.0, 1.0], np.float32)),  # keeps x == alpha
    "clip": ({"x": X}, lambda x: mb.clip(x=x, alpha=-0.5, beta=1.0), lambda x: np.clip(x, -0.5, 1.0)),
    "leaky_relu": ({"x": X}, lambda x: mb.leaky_relu(x=x, alpha=0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    "elu": ({"x": X}, lambda x: mb.elu(x=x, alpha=0.7), lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    "prelu": ({"x": IMG}, lambda x: mb.prelu(x=x, alpha=S4), lambda x: np.where(x >= 0, x, S4.reshape(1, 4, 1, 1) * x)),
    "linear_activation": ({"x": X}, lambda x: mb.linear_activation(x=x, alpha=2.0, beta=-1.0), lambda x: 2 * x - 1),
    "scaled_tanh": ({"x": X}, lambda x: mb.scaled_tanh(x=x, alpha=2.0, beta=0.5), lambda x: 2 * np.tanh(0.5 * x)),
    "silu": ({"x": X}, lambda x: mb.silu(x=x), lambda x: x * sigmoid(x)),
    "softplus": ({"x": X}, lambda x: mb.softplus(x=x), lambda x: np.log1p(np.exp(x))),
    "softsign": ({"x": X}, lambda x: mb.softsign(x=x), lambda x: x / (1 + np.abs(x))),
    "gelu": ({"x": X}, lambda x: mb.gelu(x=x), lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))),
    "gelu-tanh": ({"x": X}, lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
                  lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    "gelu-sigmoid": ({"x": X}, lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"), lambda x: x * sigmoid(1.702 * x)),
    "softmax": ({"x": X}, lambda x: mb.softmax(x=x, axis=1),
                lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
    # normalisation
    "batch_norm": ({"x": IMG}, lambda x: mb.batch_norm(x=x, mean=MEAN4, variance=VAR4, gamma=GAMMA4, beta=BETA4,
                                                        epsilon=1e-3), _bn),
    "layer_norm": ({"x": X}, lambda x: mb.layer_norm(x=x, axes=[-1], gamma=GAMMA4, beta=BETA4),
                   lambda x: _ln(x, [2], GAMMA4, BETA4)),
    "layer_norm-channels": ({"x": IMG}, lambda x: mb.layer_norm(x=x, axes=[1], gamma=GAMMA4, beta=BETA4, epsilon=1e-6),
                            lambda x: _ln(x, [1], GAMMA4, BETA4, 1e-6)),
    "layer_norm-noaffine": ({"x": X}, lambda x: mb.layer_norm(x=x, axes=[1, 2]), lambda x: _ln(x, [1, 2])),
    "instance_norm": ({"x": IMG}, lambda x: mb.instance_norm(x=x, gamma=GAMMA4, beta=BETA4),
                      lambda x: _ln(x, [2, 3]) * GAMMA4.reshape(1, 4, 1, 1) + BETA4.reshape(1, 4, 1, 1)),
    "l2_norm": ({"x": IMG}, lambda x: mb.l2_norm(x=x),
                lambda x: x / np.sqrt((x**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6)),
    # linear algebra
    "linear": ({"x": X}, lambda x: mb.linear(x=x, weight=W_LIN, bias=B5), lambda x: x @ W_LIN.T + B5),
    "linear-nobias": ({"x": X}, lambda x: mb.linear(x=x, weight=W_LIN), lambda x: x @ W_LIN.T),
    "matmul": ({"x": QKV, "y": QKV[:, :, :4].copy()}, lambda x, y: mb.matmul(x=x, y=y), lambda x, y: x @ y),
    "matmul-transposed": ({"x": QKV, "y": QKV[:, :, ::-1].copy()},
                          lambda x, y: mb.matmul(x=x, y=y, transpose_x=True, transpose_y=False),
                          lambda x, y: np.swapaxes(x, -1, -2) @ y),
    "matmul-transpose_y": ({"x": QKV, "y": QKV[:, :, ::-1].copy()},
                           lambda x, y: mb.matmul(x=x, y=y, transpose_y=True), lambda x, y: x @ np.swapaxes(y, -1, -2)),
    "einsum": ({"a": r(1, 2, 3, 4), "b": r(1, 4, 3, 5)},
               lambda a, b: mb.einsum(values=(a, b), equation="nchw,nwhu->nchu"),
               lambda a, b: np.einsum("nchw,nwhu->nchu", a, b)),
    "conv": ({"x": IMG}, lambda x: mb.conv(x=x, weight=W_CONV, bias=B6, strides=[2, 1], pad_type="custom",
                                           pad=[1, 0, 2, 1], groups=2),
             lambda x: np_conv(x, W_CONV, B6, (2, 1), (1, 0, 2, 1), groups=2)),  # pad is [top, bottom, left, right]
    "conv-default": ({"x": IMG}, lambda x: mb.conv(x=x, weight=W_CONV, groups=2),
                     lambda x: np_conv(x, W_CONV, None, (1, 1), (0, 0, 0, 0), groups=2)),
    "conv-same": ({"x": IMG}, lambda x: mb.conv(x=x, weight=W_CONV, pad_type="same", strides=[2, 2], groups=2),
                  lambda x: np_conv(x, W_CONV, None, (2, 2), (1, 1, 0, 1), groups=2)),  # H=7: 1+1, W=8: 0+1
    "conv-same_lower": ({"x": IMG}, lambda x: mb.conv(x=x, weight=W_CONV, pad_type="same_lower", strides=[2, 2],
                                                      groups=2),
                        lambda x: np_conv(x, W_CONV, None, (2, 2), (1, 1, 1, 0), groups=2)),
    "conv-dilated": ({"x": IMG}, lambda x: mb.conv(x=x, weight=W_CONV, pad_type="custom", pad=[2, 2, 2, 2],
                                                   dilations=[2, 2], groups=2),
                     lambda x: np_conv(x, W_CONV, None, (1, 1), (2, 2, 2, 2), (2, 2), groups=2)),
    "conv_transpose": ({"x": IMG}, lambda x: mb.conv_transpose(x=x, weight=r(4, 3, 3, 3, lo=-0.5, hi=0.5, ),
                                                               strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),
                       None),  # reference below: torch with the same weight (closure over the const)
    # pooling
    "max_pool": ({"x": IMG}, lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                   pad=[1, 1, 1, 1]),
                 lambda x: F.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()),
    "max_pool-same": ({"x": IMG}, lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="same"),
                      lambda x: F.max_pool2d(torch.from_numpy(np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)),
                                                                     constant_values=-np.inf)), 2, 2).numpy()),
    "avg_pool": ({"x": IMG}, lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                   pad=[1, 1, 1, 1]),
                 lambda x: F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=True).numpy()),
    "avg_pool-exclude": ({"x": IMG}, lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                           pad=[1, 1, 1, 1], exclude_padding_from_average=True),
                         lambda x: F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=False).numpy()),
    "avg_pool-ceil": ({"x": IMG}, lambda x: mb.avg_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid",
                                                        ceil_mode=True),
                      lambda x: F.avg_pool2d(torch.from_numpy(x), 2, 2, ceil_mode=True).numpy()),
    # reductions
    "reduce_mean": ({"x": IMG}, lambda x: mb.reduce_mean(x=x, axes=[2, 3], keep_dims=True),
                    lambda x: x.mean(axis=(2, 3), keepdims=True)),
    "reduce_sum": ({"x": X}, lambda x: mb.reduce_sum(x=x, axes=[-1]), lambda x: x.sum(axis=-1)),
    "reduce_max": ({"x": X}, lambda x: mb.reduce_max(x=x, axes=[0, 2], keep_dims=False), lambda x: x.max(axis=(0, 2))),
    "reduce_max-all": ({"x": X}, lambda x: mb.reduce_max(x=x), lambda x: np.array(x.max())),
    "reduce_min": ({"x": X}, lambda x: mb.reduce_min(x=x, axes=[1]), lambda x: x.min(axis=1)),
    "reduce_prod": ({"x": X}, lambda x: mb.reduce_prod(x=x, axes=[1, 2]), lambda x: x.prod(axis=(1, 2))),
    "reduce_l1_norm": ({"x": X}, lambda x: mb.reduce_l1_norm(x=x, axes=[1]), lambda x: np.abs(x).sum(axis=1)),
    "reduce_l2_norm": ({"x": X}, lambda x: mb.reduce_l2_norm(x=x, axes=[1]), lambda x: np.sqrt((x**2).sum(axis=1))),
    "reduce_sum_square": ({"x": X}, lambda x: mb.reduce_sum_square(x=x, axes=[1]), lambda x: (x**2).sum(axis=1)),
    "reduce_log_sum": ({"x": POS}, lambda x: mb.reduce_log_sum(x=x, axes=[1]), lambda x: np.log(x.sum(axis=1))),
    "reduce_log_sum_exp": ({"x": X}, lambda x: mb.reduce_log_sum_exp(x=x, axes=[1]),
                           lambda x: np.log(np.exp(x).sum(axis=1))),
    "reduce_argmax": ({"x": X}, lambda x: mb.reduce_argmax(x=x, axis=1), lambda x: x.argmax(axis=1)),
    "reduce_argmin": ({"x": X}, lambda x: mb.reduce_argmin(x=x, axis=-1, keep_dims=True),
                      lambda x: x.argmin(axis=-1)[..., None]),
    # shape and layout
    "reshape": ({"x": X}, lambda x: mb.reshape(x=x, shape=[0, -1, 2]), lambda x: x.reshape(2, -1, 2)),
    "transpose": ({"x": X}, lambda x: mb.transpose(x=x, perm=[2, 0, 1]), lambda x: x.transpose(2, 0, 1)),
    "squeeze": ({"x": r(1, 3, 1, 2)}, lambda x: mb.squeeze(x=x, axes=[-2]), lambda x: x[:, :, 0]),
    "squeeze-all": ({"x": r(1, 3, 1, 2)}, lambda x: mb.squeeze(x=x), lambda x: x[0, :, 0]),
    "expand_dims": ({"x": X}, lambda x: mb.expand_dims(x=x, axes=[0, -1]), lambda x: x[None, ..., None]),
    "flatten2d": ({"x": IMG}, lambda x: mb.flatten2d(x=x, axis=2), lambda x: x.reshape(4, 56)),
    "concat": ({"a": X, "b": X[:, :1].copy()}, lambda a, b: mb.concat(values=(a, b), axis=1),
               lambda a, b: np.concatenate([a, b], axis=1)),
    "concat-interleave": ({"a": X, "b": -X}, lambda a, b: mb.concat(values=(a, b), axis=1, interleave=True),
                          lambda a, b: np.stack([a, b], axis=2).reshape(2, 6, 4)),
    "stack": ({"a": X, "b": -X}, lambda a, b: mb.stack(values=(a, b), axis=1), lambda a, b: np.stack([a, b], 1)),
    "split": ({"x": X}, lambda x: mb.split(x=x, split_sizes=[1, 3], axis=-1), lambda x: (x[..., :1], x[..., 1:])),
    "split-num_splits": ({"x": X}, lambda x: mb.split(x=x, num_splits=2, axis=2), lambda x: (x[..., :2], x[..., 2:])),
    "slice_by_index": ({"x": X}, lambda x: mb.slice_by_index(x=x, begin=[0, 1, -3], end=[2, 3, 4],
                                                             end_mask=[True, False, False]),
                       lambda x: x[:, 1:3, -3:4]),
    "slice_by_index-stride": ({"x": X}, lambda x: mb.slice_by_index(x=x, begin=[1, 0, 3], end=[0, 3, 0],
                                                                    stride=[1, 2, -2], begin_mask=[True, False, False],
                                                                    end_mask=[True, True, True]),
                              lambda x: x[:, 0:3:2, 3::-2]),
    "slice_by_index-squeeze": ({"x": X}, lambda x: mb.slice_by_index(x=x, begin=[1, 0, 2], end=[2, 3, 3],
                                                                     squeeze_mask=[True, False, True]),
                               lambda x: x[1, 0:3, 2]),
    "slice_by_size": ({"x": X}, lambda x: mb.slice_by_size(x=x, begin=[1, 0, 1], size=[1, -1, 2]),
                      lambda x: x[1:2, 0:, 1:3]),
    "gather": ({"x": X}, lambda x: mb.gather(x=x, indices=np.array([[2, -1], [0, 0]], np.int32), axis=1),
               lambda x: x[:, [[2, 2], [0, 0]]]),
    "gather-batch_dims": ({"x": X}, lambda x: mb.gather(x=x, indices=np.array([[1, 0], [2, 2]], np.int32), axis=1,
                                                        batch_dims=1),
                          lambda x: np.stack([x[0, [1, 0]], x[1, [2, 2]]])),
    "gather_along_axis": ({"x": X}, lambda x: mb.gather_along_axis(x=x, indices=ri(2, 3, 2, hi=4), axis=2),
                          None),  # reference below (np.take_along_axis with the same const indices)
    "gather_nd": ({"x": X}, lambda x: mb.gather_nd(x=x, indices=np.array([[0, 1], [1, -1]], np.int32)),
                  lambda x: np.stack([x[0, 1], x[1, 2]])),
    "pad": ({"x": IMG}, lambda x: mb.pad(x=x, pad=[1, 0, 2, 1], constant_val=0.5),
            lambda x: np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)), constant_values=0.5)),  # MIL: first dim first
    "pad-reflect": ({"x": IMG}, lambda x: mb.pad(x=x, pad=[0, 0, 0, 0, 1, 2, 2, 1], mode="reflect"),
                    lambda x: np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), mode="reflect")),
    "pad-replicate": ({"x": IMG}, lambda x: mb.pad(x=x, pad=[2, 1, 0, 3], mode="replicate"),
                      lambda x: np.pad(x, ((0, 0), (0, 0), (2, 1), (0, 3)), mode="edge")),
    "tile": ({"x": X}, lambda x: mb.tile(x=x, reps=[1, 2, 3]), lambda x: np.tile(x, (1, 2, 3))),
    "shape": ({"x": X}, lambda x: mb.shape(x=x), lambda x: np.array(x.shape, np.int32)),
    "fill": ({"x": X}, lambda x: mb.add(x=x, y=mb.fill(shape=[2, 3, 4], value=1.5)), lambda x: x + 1.5),
    "range_1d": ({"x": Y}, lambda x: mb.add(x=x, y=mb.range_1d(start=0.0, end=2.0, step=0.5)),
                 lambda x: x + np.arange(0, 2, 0.5)),
    "pixel_shuffle": ({"x": IMG}, lambda x: mb.pixel_shuffle(x=x, upscale_factor=2),
                      lambda x: F.pixel_shuffle(torch.from_numpy(x), 2).numpy()),
    "pixel_unshuffle": ({"x": r(1, 2, 4, 6)}, lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
                        lambda x: F.pixel_unshuffle(torch.from_numpy(x), 2).numpy()),
    "depth_to_space": ({"x": IMG}, lambda x: mb.depth_to_space(x=x, block_size=2),
                       lambda x: x.reshape(1, 2, 2, 1, 7, 8).transpose(0, 3, 4, 1, 5, 2).reshape(1, 1, 14, 16)),
    "space_to_depth": ({"x": r(1, 2, 4, 6)}, lambda x: mb.space_to_depth(x=x, block_size=2),
                       lambda x: x.reshape(1, 2, 2, 2, 3, 2).transpose(0, 3, 5, 1, 2, 4).reshape(1, 8, 2, 3)),
    # resizing
    "upsample_bilinear": ({"x": IMG}, lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0,
                                                                     scale_factor_width=1.5, align_corners=False),
                          lambda x: _bilinear_ref(x, 14, 12, False)),
    "upsample_bilinear-align": ({"x": IMG},  # default align_corners=True
                                lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=2),
                                lambda x: _bilinear_ref(x, 14, 16, True)),
    "upsample_bilinear-asymmetric": ({"x": r(1, 1, 2, 2)}, lambda x: mb.upsample_bilinear(
        x=x, scale_factor_height=2, scale_factor_width=2, align_corners=False, half_pixel_centers=False),
        lambda x: _asym_ref(x)),
    "resize_bilinear": ({"x": r(1, 1, 2, 2)},
                        lambda x: mb.resize_bilinear(x=x, target_size_height=5, target_size_width=5,
                                                     sampling_mode="STRICT_ALIGN_CORNERS"),
                        lambda x: _bilinear_ref(x, 5, 5, True)),
    "resize_bilinear-default": ({"x": r(1, 1, 1, 2)}, lambda x: mb.resize_bilinear(x=x, target_size_height=1,
                                                                                  target_size_width=5),
                                lambda x: _grid_ref(x, [0.0, 0.4, 0.8, 1.0, 1.0])),  # MIL doc example, DEFAULT
    "resize_bilinear-offset": ({"x": r(1, 1, 1, 2)}, lambda x: mb.resize_bilinear(x=x, target_size_height=1,
                                                                                 target_size_width=5,
                                                                                 sampling_mode="OFFSET_CORNERS"),
                               lambda x: _grid_ref(x, [0.1, 0.3, 0.5, 0.7, 0.9])),
    "upsample_nearest_neighbor": ({"x": IMG}, lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2,
                                                                                     scale_factor_width=3),
                                  lambda x: x.repeat(2, axis=2).repeat(3, axis=3)),
    "resize_nearest_neighbor": ({"x": IMG}, lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=14,
                                                                                 target_size_width=4),
                                lambda x: x.repeat(2, axis=2)[..., ::2]),
    # attention (iOS18)
    "scaled_dot_product_attention": ({"q": QKV, "k": QKV[:, :, ::-1].copy(), "v": QKV * 2},
                                     lambda q, k, v: mb.scaled_dot_product_attention(query=q, key=k, value=v), _attn,
                                     iOS18),
    # activation quantization (iOS17)
    "quantize": ({"x": np.array([[-0.125, 0.125, 0.375, 0.625], [-1.0, 40.0, -40.0, 0.0]], np.float32)},
                 lambda x: mb.quantize(input=x, scale=np.float32(0.25), zero_point=np.int8(3), output_dtype="int8"),
                 lambda x: np.array([[3, 3, 5, 5], [-1, 127, -128, 3]], np.int8)),  # half to even, then clip
    "quantize-perchannel-uint8": ({"x": X[0].copy()},
                                  lambda x: mb.quantize(input=x, scale=S3, zero_point=np.array([128, 100, 0], np.uint8),
                                                        axis=0, output_dtype="uint8"),
                                  lambda x: np.clip(np.round(x / S3[:, None]) + [[128], [100], [0]], 0, 255)
                                  .astype(np.uint8)),
    "dequantize": ({"q": Q8}, lambda q: mb.dequantize(input=q, scale=S3, zero_point=ZP3, axis=0),
                   lambda q: (q.astype(np.float32) - ZP3[:, None]) * S3[:, None]),
    "dequantize-scalar": ({"q": Q8}, lambda q: mb.dequantize(input=q, scale=np.float32(0.5)),
                          lambda q: q.astype(np.float32) * 0.5),
    # compressed weights
    "constexpr_affine_dequantize": (
        {"x": r(3, 4)}, lambda x: mb.add(x=x, y=mb.constexpr_affine_dequantize(quantized_data=Q8, zero_point=ZP3,
                                                                                scale=S3, axis=0)),
        lambda x: x + (Q8.astype(np.float32) - ZP3[:, None]) * S3[:, None], iOS16),
    "constexpr_blockwise_shift_scale": (
        {"x": r(4, 6)}, lambda x: mb.add(x=x, y=mb.constexpr_blockwise_shift_scale(data=BW_DATA, scale=BW_SCALE,
                                                                                    offset=BW_OFFSET)),
        lambda x: x + (BW_DATA - BW_OFFSET.repeat(2, 0).repeat(2, 1)) * BW_SCALE.repeat(2, 0).repeat(2, 1), iOS18),
    "constexpr_lut_to_dense": (
        {"x": r(3, 4)}, lambda x: mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=pack_bits(IDX2, 2), lut=LUT4,
                                                                           shape=np.array([3, 4], np.uint32))),
        lambda x: x + LUT4[IDX2], iOS16),
    "constexpr_lut_to_dense-ios18": (
        {"x": r(4, 6)}, lambda x: mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=LUT18_IDX, lut=LUT18)),
        lambda x: x + LUT18_DENSE, iOS18),
    "constexpr_sparse_to_dense": (
        {"x": r(3, 4)}, lambda x: mb.add(x=x, y=mb.constexpr_sparse_to_dense(
            nonzero_data=NZ, mask=pack_bits(MASK.astype(np.uint8), 1), shape=np.array([3, 4], np.uint32))),
        lambda x: x + _scatter(MASK, NZ), iOS16),
    "constexpr_sparse_to_dense-ios18": (
        {"x": r(3, 4)}, lambda x: mb.add(x=x, y=mb.constexpr_sparse_to_dense(nonzero_data=SPARSE18_NZ,
                                                                              mask=SPARSE18_MASK)),
        lambda x: x + _scatter(SPARSE18_MASK.astype(bool), SPARSE18_NZ), iOS18),
    "constexpr_cast": ({"x": r(3, 4)}, lambda x: mb.add(x=x, y=mb.constexpr_cast(source_val=X[0].astype(np.float16),
                                                                                  output_dtype="fp32")),
                       lambda x: x + X[0].astype(np.float16).astype(np.float32), iOS16),
}


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, np.float32)
    out[mask] = values
    return out


def _grid_ref(x: np.ndarray, cols: list[float]) -> np.ndarray:
    """1-row bilinear sampling of x[..., 0, :] at the given column positions (MIL doc's grid examples)."""
    row = x[0, 0, 0]
    vals = [row[int(math.floor(c))] * (1 - (c - math.floor(c))) + row[min(int(math.floor(c)) + 1, len(row) - 1)]
            * (c - math.floor(c)) for c in cols]
    return np.array(vals, np.float32).reshape(1, 1, 1, -1)


def _asym_ref(x: np.ndarray) -> np.ndarray:
    """align_corners=False, half_pixel_centers=False (TF legacy): sample at i * in / out = 0, 0.5, 1, 1.5->1."""
    pos = [0.0, 0.5, 1.0, 1.0]

    def lerp(a, axis):
        parts = []
        for p in pos:
            i0 = int(math.floor(p))
            i1 = min(i0 + 1, 1)
            f = p - i0
            parts.append(np.take(a, i0, axis) * (1 - f) + np.take(a, i1, axis) * f)
        return np.stack(parts, axis)

    return lerp(lerp(x, 2), 3)


def _case(name):
    entry = CASES[name]
    inputs, fn, ref = entry[:3]
    opset = entry[3] if len(entry) > 3 else iOS17
    return inputs, fn, ref, opset


def _op_type(name: str) -> str:
    return name.split("-")[0]


def _const_of(prog: Program, op_type: str, key: str) -> np.ndarray:
    op = next(o for o in prog.functions["main"].operations if o.op_type == op_type)
    return op.inputs[key].val


def _check_spec(name: str, prog: Program) -> None:
    """The kernel declares every input coremltools' op class has, with coremltools' default values.

    (coremltools' builder fills the defaults its ``default_inputs()`` lists, on load too; inputs it leaves out,
    such as upsample_bilinear's ``half_pixel_centers``, get the kernel's default.)
    """
    kern = ops.KERNELS[_op_type(name)]
    op = next(o for o in prog.functions["main"].operations if o.op_type == _op_type(name))
    assert set(op.input_spec.input_types) <= set(kern.inputs), f"{name}: kernel lacks inputs"
    theirs = dict(op.default_inputs().items())
    for key, spec in kern.inputs.items():
        val = theirs.get(key)
        if spec.required or spec.default is None or val is None:
            continue
        if isinstance(spec.default, str):
            assert val == spec.default, f"{name}.{key}"
        else:
            assert np.allclose(np.asarray(val, np.float64), np.asarray(spec.default, np.float64)), f"{name}.{key}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_op(name):
    """The kernel against an independent computation of the op's documented semantics (and MIL's defaults)."""
    inputs, fn, ref, opset = _case(name)
    prog = build(fn, inputs, opset)
    program = cm.from_mil(prog)
    assert _op_type(name) in program.histogram(), "the case must exercise its op"
    got = cm.run(program, inputs)
    got = [got[v.name] for v in program.outputs]
    if name == "conv_transpose":
        w = _const_of(prog, "conv_transpose", "weight")
        ref = lambda x: F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1).numpy()  # noqa: E731
    elif name == "gather_along_axis":
        idx = _const_of(prog, "gather_along_axis", "indices")
        ref = lambda x: np.take_along_axis(x, idx.astype(np.int64), axis=2)  # noqa: E731
    want = ref(*inputs.values())
    _check_spec(name, prog)
    want = list(want) if isinstance(want, tuple) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape, f"{name}: shape {g.shape} != {w.shape}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w.astype(g.dtype), err_msg=name)
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=1e-5, atol=1e-5, err_msg=name)


def test_every_kernel_has_a_test():
    tested = {_op_type(n) for n in CASES}
    assert set(ops.KERNELS) - tested == set()


def test_fp16_vars_are_rounded_after_each_op():
    x = np.linspace(1, 2, 17).astype(np.float16)
    third = np.float16(1 / 3)
    prog = build(lambda x: mb.mul(x=mb.mul(x=x, y=third), y=np.float16(3.0)), {"x": x})
    program = cm.from_mil(prog)
    out = program.outputs[0].name
    rounded = cm.run(program, {"x": x})[out]
    exact = cm.run(program, {"x": x}, fp16_rounding=False)[out]
    assert rounded.dtype == exact.dtype == np.float16
    first = (x.astype(np.float32) * np.float32(third)).astype(np.float16)  # the inner mul, rounded to fp16
    np.testing.assert_array_equal(rounded, (first.astype(np.float32) * 3).astype(np.float16))
    np.testing.assert_array_equal(exact, (x.astype(np.float32) * np.float32(third) * 3).astype(np.float16))
    assert not np.array_equal(rounded, exact)


# ---------------------------------------------------------------- errors: never pass silently


def test_unknown_op_names_op_and_var():
    x = r(2, 5)
    prog = build(lambda x: mb.cumsum(x=x, axis=1), {"x": x})
    program = cm.from_mil(prog)
    with pytest.raises(cm.UnsupportedOpError, match=r"'cumsum' \(var '.+'\)"):
        cm.run(program, {"x": x})


def test_unknown_input_of_known_op_is_refused(monkeypatch):
    x = r(2, 3)
    program = cm.from_mil(build(lambda x: mb.softmax(x=x, axis=0), {"x": x}))
    step = next(s for s in program.steps if s.op_type == "softmax")
    step.kernel = ops.Kernel("softmax", ops.softmax, {"x": ops.T()})  # a kernel that does not know "axis"
    with pytest.raises(cm.UnsupportedOpError, match="'softmax'.*'axis'"):
        cm.run(program, {"x": x})


def test_kernel_with_wrong_shape_is_caught():
    x = r(2, 3)
    program = cm.from_mil(build(lambda x: mb.relu(x=x), {"x": x}))
    step = program.steps[0]
    step.kernel = ops.Kernel("relu", lambda x: x.reshape(3, 2), {"x": ops.T()})
    with pytest.raises(EdgeError, match="declares"):
        cm.run(program, {"x": x})


def test_input_checks():
    x = r(2, 3).astype(np.float16)
    program = cm.from_mil(build(lambda x: mb.relu(x=x), {"x": x}))
    with pytest.raises(EdgeError, match="fp16.*float32"):
        cm.run(program, {"x": x.astype(np.float32)})
    with pytest.raises(EdgeError, match="shape"):
        cm.run(program, {"x": np.zeros((3, 2), np.float16)})
    with pytest.raises(EdgeError, match="takes inputs"):
        cm.run(program, {"y": x})


# ---------------------------------------------------------------- whole programs converted by coremltools


class _Attention(nn.Module):
    def __init__(self, c: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.norm(x.flatten(2).transpose(1, 2))
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        o = F.gelu(self.proj((a @ v).transpose(1, 2).reshape(b, h * w, c)))
        return x + o.transpose(1, 2).reshape(b, c, h, w)


class SmallNet(nn.Module):
    """conv/BN/hardswish, depthwise + relu6, split/concat, attention with LayerNorm/GELU/softmax, upsample."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.attn = _Attention(32)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        x = F.hardswish(self.bn(self.stem(x)))
        x = F.relu6(self.dw(x))
        a, b = torch.split(x, [8, 8], 1)
        x = self.pw(torch.cat([b * torch.sigmoid(a), a], 1))
        y = F.interpolate(self.attn(self.pool(x)), scale_factor=2, mode="bilinear", align_corners=False)
        z = torch.cat([F.max_pool2d(x + y, 3, 1, 1), x[:, :16]], 1)
        return self.head(z.mean((2, 3)))


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so the folded conv differs from the raw one
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def small_programs(tmp_path_factory):
    """The small net converted once to fp32, fp16 and int8-weight Core ML packages (shared by the tests)."""
    import coremltools.optimize.coreml as cto

    net = _small_net()
    example = torch.randn(1, 3, 32, 32)
    traced = torch.jit.trace(net, example)
    root = tmp_path_factory.mktemp("coreml")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prec, cp in (("fp32", ct.precision.FLOAT32), ("fp16", ct.precision.FLOAT16)):
            ml = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=example.shape)], convert_to="mlprogram",
                            compute_precision=cp, minimum_deployment_target=ct.target.iOS17)
            paths[prec] = root / f"{prec}.mlpackage"
            ml.save(str(paths[prec]))
            if prec == "fp32":
                cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                    mode="linear_symmetric", weight_threshold=0))  # every weight, however small
                q = cto.linear_quantize_weights(ml, cfg)
                paths["int8w"] = root / "int8w.mlpackage"
                q.save(str(paths["int8w"]))
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = net(x).numpy()
    return paths, x.numpy(), ref, net


def _run_all(path: Path, x: np.ndarray, **kw) -> np.ndarray:
    program = cm.load_program(path)
    dtype = np.float16 if program.inputs[0].dtype == "fp16" else np.float32
    outs = [cm.run(program, {"input": x[i:i + 1].astype(dtype)}, **kw) for i in range(len(x))]
    return np.concatenate([next(iter(o.values())).astype(np.float32) for o in outs])


def test_small_net_fp32_matches_pytorch(small_programs):
    paths, x, ref, _ = small_programs
    got = _run_all(paths["fp32"], x)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-4)
    hist = cm.op_histogram(paths["fp32"])
    for op in ("conv", "thresholded_relu", "sigmoid_hard", "relu6", "split", "concat", "layer_norm", "linear",
               "matmul", "softmax", "gelu", "upsample_bilinear", "avg_pool", "max_pool", "reduce_mean"):
        assert hist.get(op, 0) >= 1, f"the test net should exercise {op}"


def test_small_net_fp16_close_to_pytorch(small_programs):
    paths, x, ref, _ = small_programs
    program = cm.load_program(paths["fp16"])
    assert program.inputs[0].dtype == "fp16"
    got = _run_all(paths["fp16"], x)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 1e-2, f"fp16 relative error {err:.2e}"
    unrounded = _run_all(paths["fp16"], x, fp16_rounding=False)
    assert np.abs(unrounded - ref).max() < np.abs(got - ref).max(), "rounding each fp16 op must add error"


def test_small_net_int8_weights_within_quantization_error(small_programs):
    paths, x, ref, net = small_programs
    hist = cm.op_histogram(paths["int8w"])
    assert hist.get("constexpr_affine_dequantize", 0) >= 6  # every conv / linear weight
    got = _run_all(paths["int8w"], x)
    noise = np.sum((got - ref) ** 2)
    sqnr = 10 * np.log10(np.sum(ref**2) / noise)
    assert 25 < sqnr < 80, f"int8 weights: SQNR {sqnr:.1f} dB (neither exact nor broken)"
    fp32 = _run_all(paths["fp32"], x)
    assert np.abs(fp32 - ref).max() < np.abs(got - ref).max()


def test_intermediates_are_every_non_const_var(small_programs):
    paths, x, _, _ = small_programs
    program = cm.load_program(paths["fp32"])
    inputs = {"input": x[:1]}
    inter = cm.run_with_intermediates(program, inputs)
    names = {o.name for s in program.steps for o in s.outputs}
    assert set(inter) == names | {"input"}
    out = program.outputs[0].name
    np.testing.assert_array_equal(inter[out], cm.run(program, inputs)[out])
    assert not set(inter) & set(program.consts)


def test_docstring_program_loads(small_programs, tmp_path):
    paths, x, ref, _ = small_programs
    model = ct.models.MLModel(str(paths["fp32"]), skip_model_load=True)
    spec = model.get_spec()
    spec.mlProgram.docString = "written by a tool that documents its programs"
    path = tmp_path / "doc.mlpackage"
    ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True).save(str(path))
    got = cm.run(path, {"input": x[:1]})
    np.testing.assert_allclose(next(iter(got.values())), ref[:1], atol=2e-5, rtol=1e-4)


def test_op_histogram_from_spec_matches_program(small_programs):
    paths, _, _, _ = small_programs
    assert cm.op_histogram(paths["int8w"]) == cm.load_program(paths["int8w"]).histogram()
    assert "const" not in cm.op_histogram(paths["int8w"])


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeError, match="does not exist"):
        cm.load_program(tmp_path / "nope.mlpackage")

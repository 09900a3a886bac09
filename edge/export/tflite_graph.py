"""Graph rewrites on a converted .tflite flatbuffer: for speed (fewer layout ops; int8 graphs that XNNPACK takes
whole, see the section below) and for correctness (PyTorch's nearest resize).

- Fewest layout ops (issue 6): litert-torch lowers ``a @ b.transpose(-1, -2)`` to a TRANSPOSE feeding
  BATCH_MATMUL, although BATCH_MATMUL can read its second operand transposed (``adj_y``), which LiteRT's reference
  kernels and XNNPACK (as a transposed right-hand side) both run. ``fold_transposes`` moves such transposes into the
  matmul and drops them when nothing else reads them.
- PyTorch's ``mode="nearest"`` picks source index ``floor(dst * in / out)``; litert-torch lowers it to
  RESIZE_NEAREST_NEIGHBOR with ``half_pixel_centers=True``, i.e. ``floor((dst + 0.5) * in / out)``, which is the
  same only for integer scale factors. GhostNetV2's DFC attention upsamples 3x3 to 7x7 at 224 px, so its TFLite
  file measured 20 dB against PyTorch. ``torch_nearest_resize`` sets ``half_pixel_centers=False``: LiteRT then
  computes exactly PyTorch's index. (``mode="nearest-exact"`` is decomposed to a gather by the converter and never
  becomes this op.)
- Integer exports (``INTEGER_REWRITES``, applied to the float graph before ai-edge-quantizer): a per-head
  projection summed over the heads becomes one CONV_2D, which computes in int8 where a BATCH_MATMUL would stay
  float (``head_sums_as_convs``).

The rewrites work on the flatbuffer's object API and touch nothing else. Files are written back with each constant
buffer of 16 bytes or more on a 16-byte boundary (flatbuffers' Python packer alone aligns bytes to 1).
``share_repeated_vectors`` packs a finished file once more with identical vectors stored once: a per-channel
quantized tensor carries one int64 zero point per channel, all 0 for symmetric weights, and these came to 8% of
EfficientFormerV2-S0's int8 file (4.40 -> 4.03 MB).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np


def _constant(model: object, sg: object, tensor_index: int, dtype: type) -> np.ndarray | None:
    """The flat values of a constant tensor read as ``dtype``, or None when it has no buffer (an activation)."""
    t = sg.tensors[tensor_index]
    data = model.buffers[t.buffer].data if 0 < t.buffer < len(model.buffers) else None
    if data is None or len(data) == 0:
        return None
    return np.frombuffer(bytes(bytearray(data)), dtype=dtype)


def _perm(model: object, sg: object, tensor_index: int) -> list[int] | None:
    """The constant permutation held by a tensor, or None when it is not a constant buffer."""
    values = _constant(model, sg, tensor_index, np.int32)
    return None if values is None else values.tolist()


def _swaps_last_two(perm: list[int] | None) -> bool:
    n = len(perm or [])
    return n >= 2 and perm == [*range(n - 2), n - 1, n - 2]


def _const_int32(model: object, sg: object, values: list[int], name: str) -> int:
    """Append a constant int32 vector tensor (and its buffer); return its index."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.asarray(values, np.int32).view(np.uint8)
    model.buffers.append(buffer)
    t = schema.TensorT()
    t.shape, t.type, t.buffer, t.name = [len(values)], schema.TensorType.INT32, len(model.buffers) - 1, name.encode()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _op_codes(model: object) -> list[int]:
    return [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]


def fold_transposes(model: object) -> int:
    """Fold TRANSPOSE ops into BATCH_MATMUL ``adj_y`` in ``model`` (a ``ModelT``); return how many were folded.

    Two shapes of the pattern are folded: TRANSPOSE -> BATCH_MATMUL, and TRANSPOSE -> RESHAPE -> BATCH_MATMUL
    where the reshape only merges or drops leading (batch) dims, as the converter writes for batch size 1; the
    reshape then reads the untransposed tensor and its last two dims are swapped.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_code = _op_codes(model)
    BM, TR, RS = (schema.BuiltinOperator.BATCH_MATMUL, schema.BuiltinOperator.TRANSPOSE,
                  schema.BuiltinOperator.RESHAPE)
    folded = 0
    for sg in model.subgraphs:
        producer = {int(o): op for op in sg.operators for o in op.outputs}
        readers = Counter(int(i) for op in sg.operators for i in op.inputs)
        outputs = {int(o) for o in sg.outputs}

        def is_swap(op: object | None, sg: object = sg) -> bool:
            return (op is not None and op_code[op.opcodeIndex] == TR
                    and _swaps_last_two(_perm(model, sg, int(op.inputs[1]))))

        for op in sg.operators:
            if op_code[op.opcodeIndex] != BM or len(op.inputs) < 2:
                continue
            opts = op.builtinOptions
            if opts is None or opts.adjX or opts.adjY:
                continue
            y = int(op.inputs[1])
            src = producer.get(y)
            if is_swap(src):
                op.inputs[1] = src.inputs[0]
            elif (src is not None and op_code[src.opcodeIndex] == RS and is_swap(producer.get(int(src.inputs[0])))
                  and readers.get(y, 0) == 1 and y not in outputs
                  and readers.get(int(src.inputs[0]), 0) == 1):
                tr = producer[int(src.inputs[0])]
                before, after = sg.tensors[int(tr.outputs[0])], sg.tensors[y]
                if list(before.shape[-2:]) != list(after.shape[-2:]) or min(after.shape) < 1:
                    continue
                new_shape = [*after.shape[:-2], after.shape[-1], after.shape[-2]]
                src.inputs[0] = tr.inputs[0]
                if len(src.inputs) > 1:
                    src.inputs[1] = _const_int32(model, sg, new_shape, f"{after.name.decode()}/adj_y_shape")
                if src.builtinOptions is not None and getattr(src.builtinOptions, "newShape", None) is not None:
                    src.builtinOptions.newShape = new_shape
                after.shape = np.asarray(new_shape, np.int32)
                if after.shapeSignature is not None and len(after.shapeSignature):
                    sig = list(after.shapeSignature)
                    after.shapeSignature = np.asarray([*sig[:-2], sig[-1], sig[-2]], np.int32)
            else:
                continue
            opts.adjY = True
            folded += 1
        if folded:
            read = {int(i) for op in sg.operators for i in op.inputs} | outputs
            sg.operators = [op for op in sg.operators
                            if not (op_code[op.opcodeIndex] == TR and all(int(o) not in read for o in op.outputs))]
    if folded:
        for index, sg in enumerate(model.subgraphs):
            _drop_unused_tensors(model, index, sg)
    return folded


def torch_nearest_resize(model: object) -> int:
    """Give every half-pixel RESIZE_NEAREST_NEIGHBOR PyTorch's ``nearest`` index rule; return how many changed."""
    from ai_edge_litert import schema_py_generated as schema

    op_code = _op_codes(model)
    changed = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            opts = op.builtinOptions
            if (op_code[op.opcodeIndex] == schema.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR and opts is not None
                    and opts.halfPixelCenters and not opts.alignCorners):
                opts.halfPixelCenters = False
                changed += 1
    return changed


# --- int8 graphs that XNNPACK takes whole ---------------------------------------------------------------------
# LiteRT's default XNNPACK delegate (ai-edge-litert 2.3.0) leaves some int8 ops to TFLite's own kernels, and every
# such op splits the graph into one more delegate partition. Measured on the quantized zoo: int8 ADD / SUB whose
# input / output scale ratio is below 2**-10 (residual branches behind a small layer scale, LayerNorm's eps),
# MAXIMUM (Mobile-Former's dynamic ReLU), RSQRT, SQUARED_DIFFERENCE, AVERAGE_POOL_2D, GELU and HARD_SWISH. The
# rewrites below give each an equivalent form that XNNPACK takes. They give the same bits, except that a float
# AVERAGE_POOL_2D, GELU or HARD_SWISH may round a tie (a value exactly between two int8 steps) the other way.

XNNPACK_MIN_ADD_SCALE_RATIO = 1.0 / 1000  # XNNPACK's bound is 2**-10 = 1/1024; the margin absorbs float rounding
# ops whose int8 output scale is free (they requantize), and ops that pass their input's scale through unchanged
_REQUANTIZING = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "QUANTIZE", "BATCH_MATMUL",
                 "MEAN", "SUM")
_SCALE_PRESERVING = ("RESHAPE",)
# GELU and HARD_SWISH: ai-edge-quantizer keeps them float already (quantize.tflite.FLOAT_OPS); PT2E makes them int8
# (EfficientFormerV2-S0 through PT2E: 30 partitions -> 1, 21.9 -> 20.1 ms at 1 thread on the VM, interleaved)
FLOAT_ISLAND_OPS = ("RSQRT", "SQUARED_DIFFERENCE", "AVERAGE_POOL_2D", "GELU", "HARD_SWISH")


def _codes(*names: str) -> set[int]:
    from ai_edge_litert import schema_py_generated as schema

    return {getattr(schema.BuiltinOperator, n) for n in names}


def _opcode_index(model: object, name: str) -> int:
    """Index of a builtin operator code in ``model``, appended (version 1) when the model has none yet."""
    from ai_edge_litert import schema_py_generated as schema

    code = getattr(schema.BuiltinOperator, name)
    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code and not c.customCode:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _new_tensor(sg: object, like: object, name: str, dtype: int | None = None,
                quant: tuple[float, int] | None = None) -> int:
    """Append an activation tensor shaped like ``like``; return its index."""
    from ai_edge_litert import schema_py_generated as schema

    t = schema.TensorT()
    t.shape = np.asarray(like.shape, np.int32)
    if like.shapeSignature is not None:
        t.shapeSignature = np.asarray(like.shapeSignature, np.int32)
    t.type = like.type if dtype is None else dtype
    t.name = name.encode()
    if quant is not None:
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = np.asarray([quant[0]], np.float32), np.asarray([quant[1]], np.int64)
        t.quantization = q
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _const_like(model: object, sg: object, like: object, data: np.ndarray, quant: tuple[float, int]) -> int:
    """Append a constant int8 tensor shaped like ``like`` holding ``data`` (its own buffer); return its index."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.ascontiguousarray(data, np.int8).view(np.uint8)
    model.buffers.append(buffer)
    index = _new_tensor(sg, like, f"{like.name.decode()}/rescaled", quant=quant)
    sg.tensors[index].buffer = len(model.buffers) - 1
    return index


def _new_op(model: object, name: str, inputs: list[int], outputs: list[int], options: object = None,
            options_type: int = 0) -> object:
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = _opcode_index(model, name), inputs, outputs
    op.builtinOptions, op.builtinOptionsType = options, options_type
    return op


def _per_tensor(t: object) -> tuple[float, int] | None:
    """(scale, zero point) of an int8 tensor quantized per tensor, else None."""
    from ai_edge_litert import schema_py_generated as schema

    q = t.quantization
    if t.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0


def raise_add_input_scales(model: object) -> int:
    """Coarsen int8 ADD / SUB inputs whose scale is below 1/1000 of the output's; return how many.

    Such an input's rounding error becomes at most 1/2000 of an output step, so the sum is unchanged (bar a
    rounding tie). A constant is re-rounded to the new scale in a copy of its own; an activation gets the new scale
    from the op that requantizes it (through reshapes), when nothing else reads it.
    """
    op_code = _op_codes(model)
    add_sub, requantizing, passing = _codes("ADD", "SUB"), _codes(*_REQUANTIZING), _codes(*_SCALE_PRESERVING)
    raised = 0
    for sg in model.subgraphs:
        producer = {int(o): op for op in sg.operators for o in op.outputs}
        readers = Counter(int(i) for op in sg.operators for i in op.inputs)
        outputs = {int(o) for o in sg.outputs}

        def sole(i: int, readers: Counter = readers, outputs: set = outputs, producer: dict = producer) -> bool:
            return readers[i] == 1 and i not in outputs and i in producer

        for op in sg.operators:
            out_q = _per_tensor(sg.tensors[int(op.outputs[0])]) if op_code[op.opcodeIndex] in add_sub else None
            if out_q is None:
                continue
            new_scale = np.float32(out_q[0] * XNNPACK_MIN_ADD_SCALE_RATIO)
            for k, i in enumerate(int(x) for x in op.inputs):
                t = sg.tensors[i]
                q = _per_tensor(t)
                if q is None or q[0] >= new_scale:
                    continue
                data = _constant(model, sg, i, np.int8)
                if data is not None:
                    # a copy for this op alone: converters share constants (one eps for every LayerNorm)
                    real = (data.astype(np.float64) - q[1]) * q[0]
                    requant = np.clip(np.round(real / float(new_scale)) + q[1], -128, 127).astype(np.int8)
                    op.inputs[k] = _const_like(model, sg, t, requant, (float(new_scale), q[1]))
                    raised += 1
                    continue
                chain = [i]
                while sole(chain[-1]) and op_code[producer[chain[-1]].opcodeIndex] in passing:
                    chain.append(int(producer[chain[-1]].inputs[0]))
                if not (sole(chain[-1]) and op_code[producer[chain[-1]].opcodeIndex] in requantizing):
                    continue
                for c in chain:
                    sg.tensors[c].quantization.scale = np.asarray([new_scale], np.float32)
                raised += 1
    return raised


def maximum_as_sub_add(model: object) -> int:
    """Write each int8 ``MAXIMUM(u, v)`` as ``ADD(v, SUB(u, v) with fused ReLU)``; return how many.

    When u, v and the output share one scale s and zero point (as the quantizer writes them), u - v is an integer
    count of steps in [-255, 255] and its ReLU fits int8 exactly at scale s with zero point -128, so both ops are
    exact: the same bits, computed by two element-wise ops that XNNPACK takes.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_code = _op_codes(model)
    (maximum,) = _codes("MAXIMUM")
    changed = 0
    for sg in model.subgraphs:
        ops = []
        for op in sg.operators:
            qs = [_per_tensor(sg.tensors[int(i)]) for i in (*op.inputs, *op.outputs)]
            if (op_code[op.opcodeIndex] != maximum or len(op.inputs) != 2 or None in qs or len(set(qs)) != 1
                    or list(sg.tensors[int(op.inputs[0])].shape) != list(sg.tensors[int(op.outputs[0])].shape)
                    or list(sg.tensors[int(op.inputs[1])].shape) != list(sg.tensors[int(op.outputs[0])].shape)):
                ops.append(op)
                continue
            u, v, y = (int(i) for i in (*op.inputs, *op.outputs))
            out = sg.tensors[y]
            diff = _new_tensor(sg, out, f"{out.name.decode()}/relu_u_minus_v", quant=(qs[0][0], -128))
            sub_opts, add_opts = schema.SubOptionsT(), schema.AddOptionsT()
            sub_opts.fusedActivationFunction = schema.ActivationFunctionType.RELU
            ops.append(_new_op(model, "SUB", [u, v], [diff], sub_opts, schema.BuiltinOptions.SubOptions))
            ops.append(_new_op(model, "ADD", [v, diff], [y], add_opts, schema.BuiltinOptions.AddOptions))
            changed += 1
        sg.operators = ops
    return changed


def float_islands(model: object, ops: tuple[str, ...] = FLOAT_ISLAND_OPS) -> int:
    """Run each int8 op of ``ops`` as DEQUANTIZE -> the op in float -> QUANTIZE; return how many.

    XNNPACK takes these ops in float, so the island stays inside the delegate instead of splitting it. RSQRT and
    SQUARED_DIFFERENCE give the same bits as TFLite's int8 kernels; AVERAGE_POOL_2D's int8 kernel divides an
    integer sum, and GELU / HARD_SWISH read a table, so at a tie the float island may round one step the other
    way.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_code = _op_codes(model)
    island = _codes(*ops)
    changed = 0
    for sg in model.subgraphs:
        ops = []
        for op in sg.operators:
            ins = [int(i) for i in op.inputs]
            if (op_code[op.opcodeIndex] not in island or len(op.outputs) != 1 or min(ins, default=-1) < 0
                    or any(_per_tensor(sg.tensors[i]) is None for i in (*ins, int(op.outputs[0])))):
                ops.append(op)
                continue
            new_inputs = []
            for i in ins:
                t = sg.tensors[i]
                f = _new_tensor(sg, t, f"{t.name.decode()}/float", dtype=schema.TensorType.FLOAT32)
                ops.append(_new_op(model, "DEQUANTIZE", [i], [f]))
                new_inputs.append(f)
            y = int(op.outputs[0])
            yf = _new_tensor(sg, sg.tensors[y], f"{sg.tensors[y].name.decode()}/float", dtype=schema.TensorType.FLOAT32)
            op.inputs, op.outputs = new_inputs, [yf]
            ops.append(op)
            ops.append(_new_op(model, "QUANTIZE", [yf], [y]))
            changed += 1
        sg.operators = ops
    return changed


# --- float graphs about to be quantized ---------------------------------------------------------------------------


def _float_tensor(sg: object, shape: list[int], name: str) -> int:
    """Append a float32 activation tensor; return its index."""
    from ai_edge_litert import schema_py_generated as schema

    t = schema.TensorT()
    t.shape, t.type, t.name = np.asarray(shape, np.int32), schema.TensorType.FLOAT32, name.encode()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _float_const(model: object, sg: object, data: np.ndarray, name: str) -> int:
    """Append a float32 constant tensor (and its buffer); return its index."""
    from ai_edge_litert import schema_py_generated as schema

    index = _float_tensor(sg, list(data.shape), name)
    buffer = schema.BufferT()
    buffer.data = np.ascontiguousarray(data, np.float32).reshape(-1).view(np.uint8)
    model.buffers.append(buffer)
    sg.tensors[index].buffer = len(model.buffers) - 1
    return index


def _float_data(model: object, sg: object, index: int) -> np.ndarray | None:
    """The values of a float32 constant tensor, or None for an activation or another type."""
    from ai_edge_litert import schema_py_generated as schema

    t = sg.tensors[index]
    data = _constant(model, sg, index, np.float32) if t.type == schema.TensorType.FLOAT32 else None
    return None if data is None else data.reshape([int(s) for s in t.shape])


def _reshape_op(model: object, sg: object, src: int, dst: int, shape: list[int]) -> object:
    from ai_edge_litert import schema_py_generated as schema

    opts = schema.ReshapeOptionsT()
    opts.newShape = list(shape)
    name = f"{sg.tensors[dst].name.decode()}/shape"
    return _new_op(model, "RESHAPE", [src, _const_int32(model, sg, list(shape), name)], [dst], opts,
                   schema.BuiltinOptions.ReshapeOptions)


def head_sums_as_convs(model: object) -> int:
    """Write each per-head projection summed over the heads as one CONV_2D; return how many.

    EfficientFormerV2's NHWC attention projects its heads with ``(h, N, c) @ W(h, c, C)`` summed over h (a
    BATCH_MATMUL with a constant operand, a RESHAPE, a SUM over the head axis), so that no transpose is needed. The
    same numbers are a convolution with an (h x 1) kernel over the ``(1, h, N, c)`` view of the heads: out[n, o] =
    sum over kh, i of x[kh, n, i] * W[kh, i, o]. Integer recipes keep BATCH_MATMUL float, so the projection -- the
    largest matmul of each attention -- ran in float inside int8 graphs; as a CONV_2D it gets per-channel int8
    weights and XNNPACK's integer GEMM (int8 over fp32 on an AMX Xeon, docs/fast-artifacts.md: EfficientFormerV2-S0
    1.44x -> 1.75x, S2 1.80x -> 2.29x; the int8 outputs stay bit-identical). In float it is as fast as the matmul,
    so only graphs about to be quantized get it.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_code = _op_codes(model)
    (bmm,), (reshape,), (reduce_sum,), (add_code,) = (_codes(n) for n in ("BATCH_MATMUL", "RESHAPE", "SUM", "ADD"))
    changed = 0
    for index, sg in enumerate(model.subgraphs):
        readers: dict[int, list[object]] = {}
        for op in sg.operators:
            for i in op.inputs:
                readers.setdefault(int(i), []).append(op)
        outputs = {int(o) for o in sg.outputs}

        def sole_reader(i: int, code: int, readers: dict = readers, outputs: set = outputs) -> object | None:
            r = readers.get(i, [])
            return r[0] if len(r) == 1 and i not in outputs and op_code[r[0].opcodeIndex] == code else None

        replaced: dict[int, list[object]] = {}  # id of the SUM (or of the bias ADD after it) -> its replacement
        gone: set[int] = set()
        for op in sg.operators:
            opts = op.builtinOptions
            if op_code[op.opcodeIndex] != bmm or (opts is not None and (opts.adjX or opts.adjY)):
                continue
            x, y = int(op.inputs[0]), int(op.outputs[0])
            w = _float_data(model, sg, int(op.inputs[1]))
            x_shape = [int(s) for s in sg.tensors[x].shape]
            if w is None or w.ndim != 3 or len(x_shape) != 3 or x_shape[0] != w.shape[0] or x_shape[2] != w.shape[1]:
                continue
            heads, n, c = x_shape
            view = sole_reader(y, reshape)
            total = sole_reader(int(view.outputs[0]), reduce_sum) if view is not None else None
            if total is None or [int(s) for s in sg.tensors[int(view.outputs[0])].shape] != [1, heads, n, w.shape[2]]:
                continue
            axis = _constant(model, sg, int(total.inputs[1]), np.int32)
            if axis is None or axis.tolist() not in ([1], [-3]):
                continue
            s, last, act = int(total.outputs[0]), total, schema.ActivationFunctionType.NONE
            b = np.zeros(w.shape[2], np.float32)
            add = sole_reader(s, add_code)
            if add is not None:
                other = [int(i) for i in add.inputs if int(i) != s]
                const = _float_data(model, sg, other[0]) if len(other) == 1 else None
                if const is not None and const.size == b.size and const.shape[-1] == b.size:
                    # the bias add (and the activation fused into it) joins the conv
                    b, s, last = const.reshape(-1), int(add.outputs[0]), add
                    act = add.builtinOptions.fusedActivationFunction if add.builtinOptions is not None else act
            name = sg.tensors[s].name.decode()
            x4 = _float_tensor(sg, [1, heads, n, c], f"{name}/heads_nhwc")
            y4 = _float_tensor(sg, [1, 1, n, w.shape[2]], f"{name}/conv")
            kernel = _float_const(model, sg, w.transpose(2, 0, 1)[:, :, None, :], f"{name}/kernel")  # (C, h, 1, c)
            bias = _float_const(model, sg, b, f"{name}/bias")
            conv_opts = schema.Conv2DOptionsT()
            conv_opts.padding, conv_opts.fusedActivationFunction = schema.Padding.VALID, act
            conv_opts.strideH = conv_opts.strideW = conv_opts.dilationHFactor = conv_opts.dilationWFactor = 1
            replaced[id(last)] = [
                _reshape_op(model, sg, x, x4, [1, heads, n, c]),
                _new_op(model, "CONV_2D", [x4, kernel, bias], [y4], conv_opts, schema.BuiltinOptions.Conv2DOptions),
                _reshape_op(model, sg, y4, s, [int(d) for d in sg.tensors[s].shape]),
            ]
            gone |= {id(op), id(view), id(total)} - {id(last)}
            changed += 1
        if replaced:
            sg.operators = [new for op in sg.operators if id(op) not in gone for new in replaced.get(id(op), [op])]
            _drop_unused_tensors(model, index, sg)
    return changed


def hybrid_constant_matmuls(model: object, keep: re.Pattern[str] | None = None) -> int:
    """Let each float BATCH_MATMUL read its constant int8 right-hand side directly (a hybrid op); return how many.

    The int8 recipes keep BATCH_MATMUL float and store a constant operand int8 behind a DEQUANTIZE, so
    EfficientFormerV2's per-head q / k / v projections ``x(N, c) @ W(h, c, d)`` ran as float GEMMs inside int8
    graphs. LiteRT's BATCH_MATMUL takes a float left and an int8 right operand: it quantizes the left one per row
    at run time (asymmetrically, as the option asks), and XNNPACK runs that as its dynamically quantized int8 GEMM
    (on an AMX Xeon, ``xnn_qd8_f32_qc8w_gemm``). Same weights; the activations' rounding becomes per-row
    instead of none. Only symmetric weights quantized per tensor or along their last (output) axis qualify, the
    layouts the kernels take; a constant left operand stays as it was (LiteRT has no float-right hybrid).
    ``keep`` matches the output tensor names of matmuls the user keeps float (``--keep-float``): left alone.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_code = _op_codes(model)
    (bmm,), (dequantize,) = _codes("BATCH_MATMUL"), _codes("DEQUANTIZE")
    changed = 0
    for index, sg in enumerate(model.subgraphs):
        producer = {int(o): op for op in sg.operators for o in op.outputs}
        bypassed: set[int] = set()
        for op in sg.operators:
            if op_code[op.opcodeIndex] != bmm or sg.tensors[int(op.inputs[0])].type != schema.TensorType.FLOAT32:
                continue
            if keep is not None and keep.search(sg.tensors[int(op.outputs[0])].name.decode()):
                continue
            deq = producer.get(int(op.inputs[1]))
            if deq is None or op_code[deq.opcodeIndex] != dequantize:
                continue
            w = sg.tensors[int(deq.inputs[0])]
            q = w.quantization
            if (w.type != schema.TensorType.INT8 or _constant(model, sg, int(deq.inputs[0]), np.int8) is None
                    or q is None or q.scale is None or (q.zeroPoint is not None and np.any(q.zeroPoint))):
                continue
            adj_y = op.builtinOptions is not None and op.builtinOptions.adjY
            if len(q.scale) > 1 and (adj_y or q.quantizedDimension != len(w.shape) - 1):
                continue
            opts = op.builtinOptions or schema.BatchMatMulOptionsT()
            opts.asymmetricQuantizeInputs = True
            op.builtinOptions, op.builtinOptionsType = opts, schema.BuiltinOptions.BatchMatMulOptions
            op.inputs[1] = int(deq.inputs[0])
            bypassed.add(id(deq))
            changed += 1
        if bypassed:
            read = {int(i) for op in sg.operators for i in op.inputs} | {int(o) for o in sg.outputs}
            sg.operators = [op for op in sg.operators if id(op) not in bypassed or int(op.outputs[0]) in read]
            _drop_unused_tensors(model, index, sg)
    return changed


INTEGER_REWRITES = {"head_sums_as_convs": head_sums_as_convs}
# after the int8 recipes whose matmuls compute in int8 (W8A8, dynamic range); not weight-only or W8A16
QUANTIZED_MATMUL_REWRITES = {"hybrid_constant_matmuls": hybrid_constant_matmuls}

REWRITES = {"transposes_folded": fold_transposes, "nearest_resizes_fixed": torch_nearest_resize,
            "add_input_scales_raised": raise_add_input_scales, "maximums_as_sub_add": maximum_as_sub_add,
            "float_islands": float_islands}


def rewrite(buf: bytes, rewrites: dict[str, Any] | None = None) -> tuple[bytes, dict[str, int]]:
    """(rewritten flatbuffer, count per rewrite); the input bytes come back unchanged when nothing applied.

    rewrites: name -> function of the model tree; default ``REWRITES``, all of them.
    """
    model = _unpack(buf)
    counts = {name: fn(model) for name, fn in (REWRITES if rewrites is None else rewrites).items()}
    if not any(counts.values()):
        return buf, counts
    return _pack(model, _AligningBuilder(len(buf) + 1024)), counts


def share_repeated_vectors(path: Path) -> dict[str, int]:
    """Pack a .tflite file again with each repeated vector (zero points, shapes, equal constants) written once and
    referenced from every table that holds it, as flatbuffers allows; return how many and the bytes saved."""
    from edge._io import atomic_path

    buf = path.read_bytes()
    builder = _SharingBuilder(len(buf) + 1024)
    out = _pack(_unpack(buf), builder)
    saved = len(buf) - len(out)
    if saved > 0:
        with atomic_path(path) as tmp:
            tmp.write_bytes(out)
    return {"vectors_shared": builder.shared, "bytes_saved": max(saved, 0)}


def _unpack(buf: bytes) -> object:
    """The writable object tree of a flatbuffer, with buffers stored after it (offset / size, as
    ai-edge-quantizer writes them) read back in, so that packing it again loses no data."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)  # writable: arrays are views of it
    for b in model.buffers or []:
        if b.offset > 1 and b.size:
            b.data = np.frombuffer(buf, np.uint8, count=int(b.size), offset=int(b.offset)).copy()
            b.offset = b.size = 0
    return model


def _pack(model: object, builder: object) -> bytes:
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _AligningBuilder(flatbuffers.Builder):
    """Starts every byte vector of 16 bytes or more (constant buffers) on a 16-byte boundary."""

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 - flatbuffers' name
        if x.dtype == np.uint8 and x.size >= 16:
            self.Prep(16, x.size)  # the data, written next, then ends on the boundary
        return super().CreateNumpyVector(x)


class _SharingBuilder(_AligningBuilder):
    """Writes each distinct vector once; a repeat gets the first one's offset (flatbuffers references may point
    to any object already written)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.written: dict[tuple[str, bytes], int] = {}
        self.shared = 0

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 - flatbuffers' name
        key = (x.dtype.str, x.tobytes())
        if key in self.written:
            self.shared += 1
            return self.written[key]
        self.written[key] = offset = super().CreateNumpyVector(x)
        return offset


def _drop_unused_tensors(model: object, index: int, sg: object) -> None:
    """Remove tensors no op, subgraph I/O or signature refers to any more, renumbering the references: tools
    that walk every tensor (ai-edge-quantizer's calibration) fail on a tensor nothing produces."""
    def refs(ids: object) -> list[int]:
        return [int(i) for i in (ids if ids is not None else [])]

    used = {i for op in sg.operators for i in (*refs(op.inputs), *refs(op.outputs), *refs(op.intermediates))}
    used |= {*refs(sg.inputs), *refs(sg.outputs)}
    sigs = [m for sig in (model.signatureDefs or []) if sig.subgraphIndex == index
            for m in (*(sig.inputs or []), *(sig.outputs or []))]
    used |= {int(m.tensorIndex) for m in sigs}
    used.discard(-1)
    if len(used) == len(sg.tensors):
        return
    new_index = {old: new for new, old in enumerate(sorted(used))}

    def remap(ids: object) -> list[int]:
        return [new_index[i] if i >= 0 else i for i in refs(ids)]

    for op in sg.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    for m in sigs:
        m.tensorIndex = new_index[int(m.tensorIndex)]
    sg.tensors = [t for i, t in enumerate(sg.tensors) if i in used]


def rewrite_in_place(path: Path, rewrites: dict[str, Any] | None = None) -> dict[str, int]:
    """Rewrite a .tflite file (through a temporary file, renamed); return the count per rewrite."""
    from edge._io import atomic_path

    out, counts = rewrite(path.read_bytes(), rewrites)
    if any(counts.values()):
        with atomic_path(path) as tmp:
            tmp.write_bytes(out)
    return counts

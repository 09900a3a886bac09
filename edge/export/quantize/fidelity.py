"""How much a quantized artifact lost, and where: output fidelity, per-layer SQNR, mixed precision, top-1 on a folder.

- Outputs: every output against the fp32 PyTorch network over the numerics gate's verification set, with the
  gate's own metrics (:func:`edge.export.numerics.compare`: SQNR, cosine, top-1/top-5 agreement).
- Layers: both the float graph and the quantized one run with every intermediate exposed; each tensor's SQNR is
  10·log10(Σfloat² / Σ(quant-float)²), accumulated from the input on (what the next layer really sees). A layer's
  *sensitivity* is the SQNR it loses: the worst SQNR among its inputs minus the SQNR of its output. The layers that
  lose the most are listed, and ``--auto-mixed N`` keeps those N in float, re-quantizes and reports the measured gain.
- ``--eval DIR``: an ImageFolder (one sub-folder per class) scored by fp32 PyTorch and by the artifact. Class
  indices are the sorted folder order, or come from ``class_index.json`` in DIR: ``{"folder": index}`` or
  Keras' ``imagenet_class_index.json`` layout ``{"index": ["wnid", "name"]}`` (matching the wnid or the name).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.export.context import ExportContext

Runner = Callable[[np.ndarray], list[np.ndarray]]
SQNR_CAP_DB = 200.0
LAYER_SAMPLES = 4  # images for the per-layer study (every intermediate of both graphs is held for one image at a time)
TOP_LAYERS = 10  # most sensitive layers listed in the manifest
CLASS_INDEX_FILES = ("class_index.json", "imagenet_class_index.json")


# ------------------------------------------------------------------------------------------------------------------
# Output fidelity


def verification_batch(ctx: ExportContext) -> torch.Tensor:
    """The numerics gate's verification images for this precision (same seed, count and preprocessing)."""
    from edge.export.numerics import VERIFY_SAMPLES, verification_inputs
    from edge.export.quantize.calibration import preprocess_of

    pp = preprocess_of(ctx)
    return verification_inputs(pp["img_size"], pp["mean"], pp["std"], pp["crop_pct"], pp["interpolation"],
                               n=VERIFY_SAMPLES.get(ctx.precision, 16))


@torch.no_grad()
def reference_outputs(model: torch.nn.Module, xs: torch.Tensor) -> list[np.ndarray]:
    """PyTorch fp32 outputs per output, stacked over samples: [N, ...] each."""
    outs: list[list[np.ndarray]] = []
    for x in xs:
        y = model(x[None])
        ys = list(y) if isinstance(y, (tuple, list)) else [y]
        if not outs:
            outs = [[] for _ in ys]
        for i, t in enumerate(ys):
            outs[i].append(t.float().numpy()[0])
    return [np.stack(o) for o in outs]


def artifact_outputs(run: Runner, xs: torch.Tensor) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = []
    for x in xs:
        ys = run(x[None].numpy().astype(np.float32))
        if not outs:
            outs = [[] for _ in ys]
        for i, y in enumerate(ys):
            outs[i].append(np.asarray(y, np.float32)[0])
    return [np.stack(o) for o in outs]


def output_fidelity(names: Sequence[str], ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    from edge.export.numerics import compare

    if len(ref) != len(got):
        raise EdgeError(f"the quantized artifact has {len(got)} outputs, the network {len(ref)}")
    names = list(names) + [f"output_{i}" for i in range(len(names), len(ref))]
    return {n: compare(r, g) for n, r, g in zip(names, ref, got)}


def headline(fid: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The first output's SQNR / top-1, the numbers the goals are stated in."""
    first = next(iter(fid.values()))
    return {"sqnr_db": first["sqnr_db"], "top1_agree": first.get("top1_agree"), "cosine": first.get("cosine")}


# ------------------------------------------------------------------------------------------------------------------
# Per-layer SQNR


class TensorNoise:
    """Σsignal² and Σnoise² per float-graph tensor name, accumulated sample by sample."""

    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, name: str, ref: np.ndarray, got: np.ndarray) -> None:
        ref = np.asarray(ref, np.float64)
        got = np.asarray(got, np.float64)
        if ref.shape != got.shape:
            if ref.size != got.size:
                return
            got = got.reshape(ref.shape)
        self.signal[name] = self.signal.get(name, 0.0) + float(np.sum(ref * ref))
        self.noise[name] = self.noise.get(name, 0.0) + float(np.sum((got - ref) ** 2))

    def sqnr(self, name: str) -> float | None:
        if name not in self.signal:
            return None
        s, n = self.signal[name], self.noise[name]
        if n == 0:
            return SQNR_CAP_DB
        if s == 0:
            return -SQNR_CAP_DB
        return min(SQNR_CAP_DB, 10.0 * math.log10(s / n))


def layer_table(layers: list[dict[str, Any]], noise: TensorNoise, graph_inputs: Sequence[str] = (),
                groups: dict[str, tuple[str, str, list[str]]] | None = None) -> list[dict[str, Any]]:
    """Per layer: SQNR of its output and the SQNR it loses against its worst input.

    An input the quantized graph does not expose (fused away, e.g. a Conv output feeding a Relu the quantizer
    folded into it) takes the SQNR of the nearest exposed tensor upstream. ``groups`` maps a tensor to
    (display name, op, the float-graph nodes that make it) where the quantized graph fused several into one.
    A graph input whose quantized view was not measured counts as exact (``graph_inputs``).
    """
    producer = {ly["output"]: ly for ly in layers}
    memo: dict[str, float] = {}

    def upstream(t: str, depth: int = 0) -> float:
        if t in memo:
            return memo[t]
        v = noise.sqnr(t)
        if v is None:
            ly = producer.get(t)
            if ly is None or depth > 64 or t in graph_inputs:
                v = SQNR_CAP_DB  # graph input or constant: no quantization noise measured upstream
            else:
                ins = [upstream(i, depth + 1) for i in ly["inputs"]]
                v = min(ins) if ins else SQNR_CAP_DB
        memo[t] = v
        return v

    rows = []
    for ly in layers:
        out = noise.sqnr(ly["output"])
        if out is None:
            continue
        name, op, nodes = (groups or {}).get(ly["output"], (ly["name"], ly["op"], [ly["name"]]))
        if len(nodes) > 1:  # a fused group: its input is the first node's
            first = next((x for x in layers if x["name"] == nodes[0]), ly)
            inputs = first["inputs"]
        else:
            inputs = ly["inputs"]
        worst_in = min([upstream(i) for i in inputs] or [SQNR_CAP_DB])
        rows.append({"layer": name, "op": op, "module": ly.get("module"), "tensor": ly["output"],
                     "sqnr_db": round(out, 2), "loss_db": round(max(0.0, min(worst_in, 100.0) - min(out, 100.0)), 2),
                     "nodes": nodes, "quantizable": ly.get("quantizable", True)})
    return rows


def most_sensitive(rows: list[dict[str, Any]], n: int, exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The ``n`` quantizable layers (not already kept float) that lose the most SQNR."""
    cand = [r for r in rows if r["quantizable"] and not set(r["nodes"]) & set(exclude) and r["loss_db"] > 0]
    return sorted(cand, key=lambda r: -r["loss_db"])[:n]


def onnx_layer_sqnr(float_path: Path, quant_path: Path, xs: list[np.ndarray], graph: Any) -> list[dict[str, Any]]:
    """Per-layer SQNR of an ONNX QDQ / weight-only / dynamic model against the float graph it came from.

    A QDQ model keeps the float graph's tensor names; a tensor re-quantized for its consumers appears as
    ``<name>_DequantizeLinear_Output``, which is the value the next layer reads, so that one is compared.
    Both run without graph optimisations, so the QDQ semantics are simulated exactly, not fused.
    """
    import onnx
    from onnx import TensorProto

    from edge.export.targets.onnx import session

    fmodel = onnx.shape_inference.infer_shapes(onnx.load(str(float_path)))
    values = list(fmodel.graph.value_info) + list(fmodel.graph.output)
    float_types = {v.name: v.type.tensor_type.elem_type for v in values}
    wanted = [ly["output"] for ly in graph.layers if float_types.get(ly["output"]) == TensorProto.FLOAT]
    qmodel = onnx.load(str(quant_path))
    produced = {o for n in qmodel.graph.node for o in n.output}
    qname = {}
    for t in wanted:
        for cand in (f"{t}_DequantizeLinear_Output", t):
            if cand in produced:
                qname[t] = cand
                break
    for gi in fmodel.graph.input:  # the quantized graph's view of its own input (QuantizeLinear on the input)
        if f"{gi.name}_DequantizeLinear_Output" in produced:
            wanted.append(gi.name)
            qname[gi.name] = f"{gi.name}_DequantizeLinear_Output"
    wanted = [t for t in wanted if t in qname]
    groups = _fused_groups(graph.layers, qmodel, wanted)
    fsess = session(_with_outputs(fmodel, wanted), optimize=False)
    qsess = session(_with_outputs(qmodel, [qname[t] for t in wanted]), optimize=False)
    fin, qin = fsess.get_inputs()[0].name, qsess.get_inputs()[0].name
    noise = TensorNoise()
    for x in xs:
        fv = dict(zip([o.name for o in fsess.get_outputs()], fsess.run(None, {fin: x})))
        qv = dict(zip([o.name for o in qsess.get_outputs()], qsess.run(None, {qin: x})))
        fv.update({fin: x})
        for t in wanted:
            noise.add(t, fv[t], qv[qname[t]])
    return layer_table(graph.layers, noise, [fin], groups)


def _fused_groups(layers: list[dict[str, Any]], qmodel: Any,
                  tensors: Sequence[str]) -> dict[str, tuple[str, str, list[str]]]:
    """Tensors the quantized graph computes with a different node than the float graph (ORT's quantizer folds
    Relu/Clip into the Conv before it): tensor -> (display name, op, float nodes from that node to the tensor)."""
    qprod = {o: n.name for n in qmodel.graph.node for o in n.output}
    fprod = {ly["output"]: ly for ly in layers}
    by_name = {ly["name"]: ly for ly in layers}
    out: dict[str, tuple[str, str, list[str]]] = {}
    for t in tensors:
        ly, q = fprod.get(t), qprod.get(t)
        if ly is None or q is None or q == ly["name"] or q not in by_name:
            continue
        chain, cur = [ly], ly
        while cur["name"] != q and cur["inputs"] and len(chain) < 6:
            cur = fprod.get(cur["inputs"][0])
            if cur is None:
                break
            chain.append(cur)
        if chain[-1]["name"] != q:
            continue
        chain.reverse()
        out[t] = ("+".join(c["name"] for c in chain), "+".join(c["op"] for c in chain), [c["name"] for c in chain])
    return out


def _with_outputs(model: Any, names: Sequence[str]) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
            have.add(n)
    return m.SerializeToString()


def tflite_layer_sqnr(float_path: Path, quant_path: Path, xs: list[np.ndarray], graph: Any) -> list[dict[str, Any]]:
    """Per-layer SQNR of a quantized .tflite against the float .tflite it was made from (ai-edge-quantizer keeps
    tensor names). Integer tensors are dequantized with their own scale / zero point. Runs on the reference
    kernels with every tensor preserved (XNNPACK would hide the intermediates)."""
    noise = TensorNoise()
    for x in xs:
        fv, qv = _tflite_tensors(float_path, x), _tflite_tensors(quant_path, x)
        for name, f in fv.items():
            if name in qv:
                noise.add(name, f, qv[name])
    return module_table(graph.layers, noise)


def module_table(layers: list[dict[str, Any]], noise: TensorNoise) -> list[dict[str, Any]]:
    """Per nn.Module (ops sharing a module path; an op without one stands alone): SQNR of what leaves it and
    what it loses against what enters it.

    TFLite graphs are ranked by module, not by op: keeping one op float in an int8 graph re-quantizes its output
    for the next int8 op with the same scale, so nothing is gained; keeping the whole module float is what helps.
    """
    producer = {ly["output"]: ly for ly in layers}
    groups: dict[str, list[dict[str, Any]]] = {}
    for ly in layers:
        groups.setdefault(ly.get("module") or ly["name"], []).append(ly)
    memo: dict[str, float] = {}

    def upstream(t: str, depth: int = 0) -> float:
        if t not in memo:
            v = noise.sqnr(t)
            if v is None:
                ly = producer.get(t)
                ins = [upstream(i, depth + 1) for i in ly["inputs"]] if ly is not None and depth < 64 else []
                v = min(ins) if ins else SQNR_CAP_DB
            memo[t] = v
        return memo[t]

    rows = []
    for key, members in groups.items():
        outs = {m["output"] for m in members}
        exits = [m for m in members if noise.sqnr(m["output"]) is not None]
        if not exits:
            continue
        last = exits[-1]
        entry = [i for m in members for i in m["inputs"] if i not in outs]
        worst_in = min([upstream(i) for i in entry] or [SQNR_CAP_DB])
        out = noise.sqnr(last["output"])
        rows.append({"layer": key, "op": "+".join(dict.fromkeys(m["op"] for m in members)),
                     "module": members[0].get("module"), "tensor": last["output"], "sqnr_db": round(out, 2),
                     "loss_db": round(max(0.0, min(worst_in, 100.0) - min(out, 100.0)), 2),
                     "nodes": [m["name"] for m in members], "quantizable": True})
    return rows


def _tflite_tensors(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": that is what this is
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], quantize_to(x, d))
    it.invoke()
    details = {t["index"]: t for t in it.get_tensor_details()}
    out: dict[str, np.ndarray] = {}
    tensors = [d["index"] for d in it.get_input_details()] + [i for op in it._get_ops_details() for i in op["outputs"]]
    for idx in tensors:
        t = details.get(idx)
        if t is None:
            continue
        try:
            v = it.get_tensor(idx)
        except ValueError:  # a tensor the runtime did not keep
            continue
        out[t["name"]] = dequantize_from(v, t)
    return out


def quantize_to(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A float array as the tensor ``detail`` wants it (quantized with its scale / zero point if integer)."""
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        scale, zp = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize_from(v: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(v.dtype, np.integer):
        qp = detail.get("quantization_parameters") or {}
        scales, zps = np.asarray(qp.get("scales", [])), np.asarray(qp.get("zero_points", []))
        if scales.size == 1:
            return (v.astype(np.float32) - float(zps[0])) * float(scales[0])
        if scales.size > 1:
            axis = int(qp.get("quantized_dimension", 0))
            shape = [1] * v.ndim
            shape[axis] = -1
            return (v.astype(np.float32) - zps.reshape(shape)) * scales.reshape(shape)
    return v.astype(np.float32)


# ------------------------------------------------------------------------------------------------------------------
# The whole study, shared by the ONNX and TFLite quantizers


def study(ctx: ExportContext, graph: Any, float_path: Path, quant_path: Path,
          runner: Callable[[Path], Runner], rebuild: Callable[[list[str]], Path], excluded: list[str],
          layer_fn: Callable[..., list[dict[str, Any]]] | None, layer_input: Callable[[np.ndarray], np.ndarray]
          | None = None) -> dict[str, Any]:
    """Output fidelity, per-layer table, optional --auto-mixed re-quantization and --eval; returns the
    manifest's fidelity fields plus ``_artifact`` (the file to ship)."""
    q = ctx.options.quant
    if "inputs" in ctx.shared and "ref" in ctx.shared:  # the pipeline's verification set and PyTorch outputs
        xs, ref = ctx.shared["inputs"], [np.asarray(r, np.float32) for r in ctx.shared["ref"]]
    else:
        xs = verification_batch(ctx)
        ref = reference_outputs(ctx.model, xs)
    names = list(ctx.output_names)
    with ctx.progress.stage("quantize", "fidelity"):
        fid = output_fidelity(names, ref, artifact_outputs(runner(quant_path), xs))
    report: dict[str, Any] = {"fidelity": {"against": "fp32 PyTorch network", "samples": int(xs.shape[0]),
                                           "outputs": fid}}
    rows: list[dict[str, Any]] = []
    if layer_fn is not None:
        lx = [layer_input(x[None].numpy()) if layer_input else x[None].numpy() for x in xs[:LAYER_SAMPLES]]
        with ctx.progress.stage("quantize", "per-layer SQNR"):
            rows = layer_fn(float_path, quant_path, lx, graph)
        report["fidelity"]["layers"] = {
            "samples": len(lx),
            "count": len(rows),
            "definition": "sqnr_db: tensor vs the float graph's; loss_db: worst input SQNR minus output SQNR "
                          "(measured before --auto-mixed)",
            "most_sensitive": most_sensitive(rows, TOP_LAYERS),
            "all": rows,
        }
    artifact = quant_path
    if q.auto_mixed:
        n = int(q.auto_mixed)
        if n < 0:
            raise EdgeError(f"--auto-mixed must be >= 0 (got {n})")
        if not rows:
            raise EdgeError(f"--auto-mixed needs the per-layer study, which {ctx.target} {ctx.precision} does not have",
                            "use --keep-float LAYER... to choose layers by hand")
        chosen = most_sensitive(rows, n, excluded)
        picks = [r["layer"] for r in chosen]
        nodes = list(dict.fromkeys(excluded + [x for r in chosen for x in r["nodes"]]))
        with ctx.progress.stage("quantize", f"auto-mixed: {len(picks)} layer(s) kept float"):
            mixed = rebuild(nodes)
            fid2 = output_fidelity(names, ref, artifact_outputs(runner(mixed), xs))
        before, after = headline(fid), headline(fid2)
        report["auto_mixed"] = {
            "n": n, "kept_float": picks, "before": before, "after": after,
            "gain_db": round(after["sqnr_db"] - before["sqnr_db"], 3),
        }
        report["fidelity"]["outputs"] = fid2
        report["fidelity"]["outputs_before_auto_mixed"] = fid
        report["kept_float"] = nodes
        artifact = mixed
    if q.eval_dir is not None:
        with ctx.progress.stage("quantize", "eval"):
            report["eval"] = evaluate_folder(Path(q.eval_dir), ctx, {ctx.precision: runner(artifact)})
    report["_artifact"] = artifact
    return report


# ------------------------------------------------------------------------------------------------------------------
# --eval DIR


def read_image_folder(root: Path) -> tuple[list[tuple[Path, int]], dict[str, int], str]:
    """(image, class index) pairs of an ImageFolder, the class map, and where the map came from."""
    from edge.data import IMAGE_SUFFIXES

    if not root.is_dir():
        raise EdgeError(f"--eval {str(root)!r} is not a folder", "give an ImageFolder: DIR/<class>/<image>.jpg")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EdgeError(f"--eval {str(root)!r} has no class sub-folders", "lay it out as DIR/<class>/<image>.jpg")
    mapping, source = {c: i for i, c in enumerate(classes)}, "sorted folder names"
    for fname in CLASS_INDEX_FILES:
        f = root / fname
        if f.is_file():
            mapping, source = _class_map(f, classes), str(f.name)
            break
    samples = []
    for c in classes:
        for p in sorted((root / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((p, mapping[c]))
    if not samples:
        raise EdgeError(f"--eval {str(root)!r} holds no images", "put JPEG/PNG files in its class folders")
    return samples, mapping, source


def _class_map(path: Path, classes: list[str]) -> dict[str, int]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgeError(f"class-index map {path} is not valid JSON: {e}") from e
    lookup: dict[str, int] = {}
    if isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(v, int):
                lookup[str(k)] = v
            elif isinstance(v, (list, tuple)) and str(k).isdigit():  # Keras: {"0": ["n01440764", "tench"]}
                for alias in v:
                    lookup[str(alias)] = int(k)
            else:
                raise EdgeError(f"class-index map {path}: entry {k!r} is neither folder->index nor index->[wnid, name]")
    else:
        raise EdgeError(f"class-index map {path} must be a JSON object")
    missing = [c for c in classes if c not in lookup]
    if missing:
        raise EdgeError(f"class-index map {path.name} has no entry for folder(s) {', '.join(missing[:5])}",
                        "add them, or remove the map to use sorted folder order")
    return {c: lookup[c] for c in classes}


def evaluate_folder(root: Path, ctx: ExportContext, runners: dict[str, Runner]) -> dict[str, Any]:
    """Top-1 of the fp32 PyTorch network and of each given artifact runner on an ImageFolder."""
    from edge.data import load_rgb, preprocess
    from edge.export.quantize.calibration import preprocess_of

    samples, mapping, source = read_image_folder(root)
    pp = preprocess_of(ctx)
    correct = {"fp32": 0, **{k: 0 for k in runners}}
    n = skipped = 0
    for path, label in samples:
        im = load_rgb(path)
        if im is None:
            skipped += 1
            continue
        x = preprocess(im, pp["img_size"], pp["mean"], pp["std"], pp["crop_pct"], pp["interpolation"])[None]
        with torch.no_grad():
            y = ctx.model(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        correct["fp32"] += int(int(y[0].argmax()) == label)
        for k, run in runners.items():
            correct[k] += int(int(np.argmax(run(x.numpy())[0][0])) == label)
        n += 1
    if skipped:
        warnings.warn(f"--eval {root}: skipped {skipped} unreadable or corrupt image(s)", UserWarning, stacklevel=2)
    if n == 0:
        raise EdgeError(f"--eval {str(root)!r}: no readable images", "check that the files are valid JPEG/PNG")
    return {"dir": str(root), "images": n, "skipped_unreadable": skipped, "classes": len(mapping),
            "class_index": source, "top1": {k: v / n for k, v in correct.items()},
            "correct": correct}


# ``--channels-last`` puts a module around the network that holds it as its attribute ``wrapped`` (litert-torch's
# ChannelLastIOWrapper for TFLite, edge.export.context.ChannelsLastIO for ONNX / Core ML); module paths leave that
# level out.
IO_WRAPPED_ATTR = "wrapped"
TFLITE_IO_WRAPPER = "ChannelLastIOWrapper"  # the root class in litert-torch's tensor names


def in_module(path: str | None, module: str) -> bool:
    """Whether module path ``path`` is ``module`` or inside it (``blocks.0.conv`` is in ``blocks.0``, not in
    ``blocks.0c``): how --keep-float selects layers by module."""
    return bool(path) and (path == module or path.startswith(module + "."))


def without_io_wrapper(path: str | None) -> str | None:
    """'wrapped.blocks.0' -> 'blocks.0': the same module path with or without --channels-last."""
    if path is None or path.split(".", 1)[0] != IO_WRAPPED_ATTR:
        return path
    return path.partition(".")[2] or None


def module_paths_of_tflite_name(name: str) -> list[str]:
    """Every module an op's tensor name speaks for, e.g. 'net.Net/net.Block_blocks.0/torch.nn.modules.conv.
    Conv2d_conv;1' -> ['blocks.0.conv'] (litert-torch names tensors after the nn.Module scope, '<qualified
    class>_<attribute>' per level). A fused op joins its scopes with ';;', the fused activation first and the op
    itself last ('..ReLU_act1;;..Conv2d_conv_stem;1'); both are kept, the ones between (scopes the converter
    carried over from other ops) are not. The NHWC wrapper's level is left out."""
    scopes = [s for s in name.split(";") if "/" in s]
    paths = [_module_path_of_scope(s) for s in scopes[:1] + scopes[1:][-1:]]
    return list(dict.fromkeys(p for p in paths if p))


def _module_path_of_scope(scope: str) -> str | None:
    root, *parts = scope.split("/")
    attrs = []
    for p in parts:
        cls_attr = p.rsplit(".", 1)[-1]
        m = re.match(r"^[A-Za-z0-9]+_(.+)$", cls_attr)
        if not m:
            break
        attrs.append(m.group(1))
    path = ".".join(attrs) or None
    return without_io_wrapper(path) if root.rsplit(".", 1)[-1] == TFLITE_IO_WRAPPER else path


def close_names(want: str, layers: list[dict[str, Any]]) -> str:
    """A hint for a --keep-float name that matched nothing: the closest module paths / layer names."""
    import difflib

    pool = list(dict.fromkeys([ly["module"] for ly in layers if ly.get("module")] +
                              [ly["name"] for ly in layers if ly.get("quantizable", True)]))
    near = difflib.get_close_matches(want, pool, n=3, cutoff=0.4) or pool[:3]
    return "give a module path (selects every layer inside it) or a layer name from the manifest's per-layer " \
           f"table, e.g. {', '.join(repr(n) for n in near)}"


# ------------------------------------------------------------------------------------------------------------------
# Running artifacts the way the numerics gate does


def io_layout(ctx: ExportContext) -> Callable[[np.ndarray], np.ndarray]:
    """NCHW float batch -> the artifact's input layout (NHWC with --channels-last)."""
    if ctx.options.channels_last:
        return lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return lambda x: x


def io_of(ctx: ExportContext, artifact: Path) -> dict[str, Any]:
    """The manifest's I/O view of an artifact (layouts, integer I/O scales), exactly as the pipeline's gate uses."""
    from edge.export.pipeline import _io
    from edge.export.targets import TARGETS

    ins, outs = _io(TARGETS[ctx.target], artifact, ctx)
    return {"inputs": ins, "outputs": outs}


def target_runner(ctx: ExportContext) -> Callable[[Path], Runner]:
    """artifact path -> the target's own runner (float NCHW in, float NCHW out; int I/O (de)quantized)."""
    from edge.export.targets import TARGETS

    return lambda artifact: TARGETS[ctx.target].runner(artifact, io_of(ctx, artifact))

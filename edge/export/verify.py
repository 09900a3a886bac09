"""``edge verify EXPORT_DIR``: re-run an export's numerics gate from its manifest alone.

The network is rebuilt from what the manifest records (zoo name + options + seed, or ``file.py:factory``, plus the
checkpoint, whose sha256 must still match), the artifact's sha256 is checked first so a file changed after export
is caught before it is run, and then the same gate as at export time runs in the artifact's runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edge._io import sha256_path
from edge._progress import Progress
from edge.errors import EdgeError, NumericsError
from edge.export import numerics
from edge.export.loader import load
from edge.export.manifest import read
from edge.export.pipeline import native_output_captured, reference_outputs
from edge.export.targets import TARGETS


@dataclass
class VerifyResult:
    path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    passed: bool


def verify(export_dir: str | os.PathLike[str], model: torch.nn.Module | None = None, *,
           progress: Progress | None = None, strict: bool = True) -> VerifyResult:
    """Check the artifact in ``export_dir`` against its manifest and its network.

    ``model`` is needed only for exports of a Python ``nn.Module`` (the manifest cannot rebuild those).
    Raises ``EdgeError`` for a changed artifact or checkpoint and, with ``strict``, ``NumericsError`` on a breach.
    """
    progress = progress or Progress()
    d = Path(export_dir)
    m = read(d)
    target = TARGETS.get(m.get("target", ""))
    if target is None:
        raise EdgeError(f"manifest target {m.get('target')!r} is unknown", f"edge knows {', '.join(TARGETS)}")
    artifact = d / m["artifact"]["file"]
    with progress.stage("checksum", str(artifact)):
        if not artifact.exists():
            raise EdgeError(f"artifact {str(artifact)!r} is missing", "re-export the model")
        sha = sha256_path(artifact)
    if sha != m["artifact"]["sha256"]:
        raise EdgeError(
            f"artifact {str(artifact)!r} was changed after export: sha256 {sha[:16]}… does not match the "
            f"manifest's {m['artifact']['sha256'][:16]}…",
            "re-export it (edge export) rather than editing the artifact",
        )
    with progress.stage("load", m["model"]):
        loaded = _rebuild(m, model)
    precision = m["precision"]
    pp = m["preprocess"]
    num = m.get("numerics") or {}
    n = int(num.get("samples") or numerics.VERIFY_SAMPLES[precision])
    seed = int(num.get("seed", numerics.VERIFY_SEED))
    with progress.stage("reference", f"PyTorch on {n} verification images"):
        inputs = numerics.verification_inputs(int(m["img_size"]), pp["mean"], pp["std"], pp.get("crop_pct", 0.875),
                                              pp.get("interpolation", "bilinear"), n, seed=seed)
        ref_list = reference_outputs(loaded.reference, inputs)
    names = list((num.get("outputs") or {}).keys()) or _default_names(ref_list)
    io = {"inputs": m["inputs"], "outputs": m["outputs"], "preprocess": pp, "image_input": m.get("image_input")}
    from edge.export.pipeline import check_artifact

    with progress.stage("verify", f"{m['target']}-{precision}"), native_output_captured(True):
        report = check_artifact(target, artifact, io, precision, inputs, ref_list, names)
    result = VerifyResult(path=d, manifest=m, report=report, passed=bool(report["passed"]))
    if not result.passed and strict:
        err = NumericsError(f"{d} fails the numerics gate: {numerics.describe_failures(report['failures'])}",
                            f"thresholds for {precision} are in edge/export/numerics.py")
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def _default_names(ref: list[Any]) -> list[str]:
    if len(ref) == 1:
        return ["logits" if ref[0].ndim == 2 else "output"]
    return [f"output_{i}" for i in range(len(ref))]


def _rebuild(m: dict[str, Any], model: torch.nn.Module | None):
    src = m.get("source") or {}
    ck = m.get("checkpoint")
    ck_path = None
    if ck:
        ck_path = ck.get("path")
        if not ck_path or not Path(ck_path).is_file():
            raise EdgeError(f"the checkpoint this export was made from ({ck_path!r}) is missing",
                            "restore it at that path to verify against the same weights")
        got = sha256_path(ck_path)
        if got != ck.get("sha256"):
            raise EdgeError(f"checkpoint {ck_path!r} changed since the export (sha256 {got[:16]}… vs "
                            f"{str(ck.get('sha256'))[:16]}…)", "re-export with the current checkpoint")
    kind = src.get("kind", "zoo")
    if model is not None:
        return load(model, checkpoint=ck_path, name=m["model"])
    if kind == "zoo":
        return load(src.get("name", m["model"]), checkpoint=ck_path, options=m.get("variant_options") or {},
                    seed=int(src.get("seed", 0)))
    if kind == "file":
        return load(src["spec"], checkpoint=ck_path, name=m["model"])
    raise EdgeError(f"{m['model']} was exported from a Python nn.Module, which a manifest cannot rebuild",
                    "verify it from Python: edge.export.verify(export_dir, model=your_module)")

"""``manifest.json`` (schema "edge.manifest/1"): everything known about one artifact, as plain JSON.

edge/devices and edge/claims read it as data (they never import edge.export), so the field names here are a
contract; see the shared schema in the project context.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

SCHEMA = "edge.manifest/1"
MANIFEST = "manifest.json"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build(*, loaded: Any, target: Any, ctx: Any, artifact: Path, artifact_sha256: str, size_bytes: int,
          inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], histogram: dict[str, int],
          numerics: dict[str, Any], stage_seconds: dict[str, float], tools: dict[str, str]) -> dict[str, Any]:
    passed = bool(numerics.get("passed"))
    layout = target.layout_counts(histogram)
    return {
        "schema": SCHEMA,
        "model": loaded.name,
        "family": loaded.family,
        "variant_options": dict(loaded.options),
        "source": loaded.source,
        "checkpoint": loaded.checkpoint,
        "activations": loaded.activations,
        "target": target.name,
        "precision": ctx.precision,
        "artifact": {"file": artifact.name, "sha256": artifact_sha256, "size_bytes": size_bytes},
        "inputs": inputs,
        "outputs": outputs,
        "preprocess": loaded.preprocess(ctx.img_size),
        "img_size": ctx.img_size,
        "channels_last": bool(ctx.options.channels_last),
        "image_input": ctx.extras.get("image_input"),
        "class_labels": list(ctx.options.class_labels) if ctx.options.class_labels else None,
        "opset": ctx.extras.get("opset"),
        "tools": tools,
        "ops": {
            "histogram": histogram,
            "total": int(sum(histogram.values())),
            "layout": layout,
            "layout_ops_counted": {"transpose": list(target.transpose_ops), "reshape": list(target.reshape_ops)},
            "graph_rewrites": ctx.extras.get("graph_rewrites"),  # edits edge made to the converter's graph
        },
        "numerics": numerics,
        "quantization": ctx.extras.get("quantization"),
        "status": "ok" if passed else "failed-numerics",
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "created": now_iso(),
    }


def read(export_dir: str | Path) -> dict[str, Any]:
    """Load and sanity-check an export folder's manifest."""
    d = Path(export_dir)
    p = d / MANIFEST
    if not d.is_dir():
        raise EdgeError(f"{str(d)!r} is not an export folder", "give OUT/<model>/<target>-<precision>/")
    if not p.is_file():
        raise EdgeError(f"{str(d)!r} has no {MANIFEST}", "give a folder written by edge export")
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgeError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        raise EdgeError(f"{p} is not an {SCHEMA} manifest (schema {m.get('schema') if isinstance(m, dict) else '?'!r})")
    return m

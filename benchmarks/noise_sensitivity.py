"""How much does each zoo network, as built without a checkpoint, amplify a small perturbation?

    .venv/bin/python benchmarks/noise_sensitivity.py [--models NAME ...]

Per network (deploy form, random weights with BatchNorm statistics re-estimated on the built-in photos, the default
without a checkpoint), on 16 built-in photos that the calibration did not see:

* input noise: Gaussian noise at -40 dB of the input's power is added to the input; the column gives the logits'
  SQNR against the clean logits. A network that neither amplifies nor damps noise gives 40 dB; lower means
  amplification (a trained classifier damps noise this small).
* weight rounding: every conv and linear weight rounded per output channel to int8 (symmetric, in PyTorch): the
  logits' SQNR and top-1 agreement. No export can do better than this for weight-only int8, and W8A8 adds
  activation rounding on top.

This explains the fidelity goals that the random networks miss (docs/quantization.md, "Goals missed"): the loss is
the network's, not the conversion's.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOISE_DB = 40.0


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum().clamp_min(1e-30)))


def round_weights_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every conv / linear weight rounded to int8 per output channel (symmetric, max-abs scale)."""
    q = copy.deepcopy(model)
    with torch.no_grad():
        for m in q.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                w = m.weight
                scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
                w.copy_((w / scale).round().clamp(-127, 127) * scale)
    return q


def measure(name: str, n_images: int = 16) -> dict[str, float | str]:
    from edge.data import image_batch
    from edge.models import create, get_info

    info = get_info(name)
    pp = info.preprocess
    model = create(name, deploy=True)
    # seed 1: other views than the BN calibration's (seed 0)
    xs, _ = image_batch(n_images, info.input_size[-1], pp.mean, pp.std, pp.crop_pct, pp.interpolation, seed=1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(xs.shape, generator=g) * xs.pow(2).mean().sqrt() * 10 ** (-NOISE_DB / 20)
    with torch.no_grad():
        ref = model(xs)
        noisy = model(xs + noise)
        rounded = round_weights_int8(model)(xs)
    return {"model": name, "family": info.family, "input_noise_db": round(sqnr_db(ref, noisy), 1),
            "weight_int8_db": round(sqnr_db(ref, rounded), 1),
            "weight_int8_top1": round(float((rounded.argmax(1) == ref.argmax(1)).float().mean()), 2)}


def main(argv: list[str] | None = None) -> int:
    from edge.models import list_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="zoo names (default: every variant)")
    args = ap.parse_args(argv)
    names = args.models or list_models()
    print(f"| network | logits SQNR, input noise at -{NOISE_DB:.0f} dB | weight int8 rounding: SQNR / top-1 |")
    print("|---|---|---|")
    for name in names:
        r = measure(name)
        print(f"| {r['model']} | {r['input_noise_db']} dB | {r['weight_int8_db']} dB / "
              f"{r['weight_int8_top1']:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

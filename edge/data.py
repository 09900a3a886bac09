"""Images: the built-in natural-image set, user folders, and per-model preprocessing.

The built-in set is the colour photographs that ship inside scikit-image's wheel (no network),
plus matplotlib's Grace Hopper photo. Each image's source and licence are recorded in
``BUILTIN_IMAGES`` so manifests can say what calibration used.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.errors import EdgeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

# file in skimage/data -> (description, licence) as documented in skimage.data's docstrings
BUILTIN_IMAGES: dict[str, tuple[str, str]] = {
    "astronaut.png": ("Eileen Collins, NASA", "public domain (NASA)"),
    "chelsea.png": ("Chelsea the cat, Stefan van der Walt", "CC0 / public domain"),
    "coffee.png": ("coffee cup, Rachel Michetti", "CC0 / public domain"),
    "rocket.jpg": ("Falcon 9 launch, SpaceX", "CC0 / public domain"),
    "motorcycle_left.png": ("Middlebury stereo motorcycle (left)", "free for research use, Middlebury"),
    "motorcycle_right.png": ("Middlebury stereo motorcycle (right)", "free for research use, Middlebury"),
    "hubble_deep_field.jpg": ("Hubble eXtreme Deep Field, NASA", "public domain (NASA)"),
    "retina.jpg": ("human retina, Häggström", "CC BY 3.0"),
    "ihc.png": ("immunohistochemistry, Sitomer", "public domain"),
    "grass.png": ("grass texture, Ben Hemmert", "CC0"),
    "gravel.png": ("gravel texture, Ben Hemmert", "CC0"),
    "brick.png": ("brick wall texture, Ben Hemmert", "CC0"),
    "color.png": ("colour wheel chart", "public domain"),
}
BUILTIN_SOURCE = "scikit-image data/ (bundled in the wheel) + matplotlib sample_data/grace_hopper.jpg"


@dataclass(frozen=True)
class ImageSet:
    """A list of image files plus where they came from, for manifests."""

    paths: tuple[Path, ...]
    source: str
    licences: tuple[str, ...] = ()
    skipped: int = 0


def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_images() -> ImageSet:
    """The bundled natural photographs; an error (never noise) if the packages are missing."""
    paths: list[Path] = []
    licences: list[str] = []
    skimage_dir = _package_dir("skimage")
    if skimage_dir is not None:
        for fname, (desc, lic) in BUILTIN_IMAGES.items():
            p = skimage_dir / "data" / fname
            if p.is_file():
                paths.append(p)
                licences.append(f"{fname}: {desc}; {lic}")
    mpl_dir = _package_dir("matplotlib")
    if mpl_dir is not None:
        p = mpl_dir / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            paths.append(p)
            licences.append("grace_hopper.jpg: Grace Hopper, US Navy; public domain")
    if len(paths) < 4:
        raise EdgeError(
            "the built-in natural images were not found",
            "install scikit-image==0.26.0 and matplotlib (they ship the images), or pass --calib DIR",
        )
    return ImageSet(tuple(paths), BUILTIN_SOURCE, tuple(licences))


def folder_images(root: str | Path) -> ImageSet:
    """All JPEG/PNG files below ``root``, recursively, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeError(f"image folder {str(root)!r} does not exist or is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EdgeError(
            f"image folder {str(root)!r} holds no images",
            f"put {', '.join(sorted(IMAGE_SUFFIXES))} files in it (searched recursively)",
        )
    return ImageSet(tuple(paths), f"user folder {root}")


def load_rgb(path: Path):  # -> PIL.Image.Image | None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def preprocess(img, size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875,
               interpolation: str = "bilinear") -> torch.Tensor:
    """Resize the shorter side to size/crop_pct, centre-crop, scale to [0,1], normalise -> [3,H,W]."""
    from PIL import Image

    interp = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    scale_size = int(round(size / crop_pct))
    w, h = img.size
    if w < h:
        nw, nh = scale_size, max(scale_size, round(h * scale_size / w))
    else:
        nw, nh = max(scale_size, round(w * scale_size / h)), scale_size
    img = img.resize((nw, nh), interp)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def _views(img, n: int, rng: np.random.Generator):
    """Deterministic crops / flips of one photo, so a dozen photos give a larger varied batch."""
    from PIL import Image

    w, h = img.size
    yield img
    for _ in range(n - 1):
        frac = rng.uniform(0.35, 0.9)
        cw, ch = int(w * frac), int(h * frac)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        v = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            v = v.transpose(Image.FLIP_LEFT_RIGHT)
        yield v


def image_batch(
    n: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float = 0.875,
    interpolation: str = "bilinear",
    images: ImageSet | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ImageSet]:
    """``n`` preprocessed images [n,3,size,size]. Unreadable files are skipped and counted with a warning.

    With fewer files than ``n``, deterministic crops and flips of each photo fill the batch.
    """
    images = images or builtin_images()
    rng = np.random.default_rng(seed)
    loaded = []
    bad = 0
    for p in images.paths:
        im = load_rgb(p)
        if im is None:
            bad += 1
        else:
            loaded.append(im)
        if len(loaded) >= n:
            break
    if bad:
        warnings.warn(f"skipped {bad} unreadable or corrupt image(s) in {images.source}", stacklevel=2)
    if not loaded:
        raise EdgeError(f"no readable images in {images.source}", "check that the files are valid JPEG/PNG")
    per = -(-n // len(loaded))
    tensors = []
    for im in loaded:
        for v in _views(im, per, rng):
            tensors.append(preprocess(v, size, mean, std, crop_pct, interpolation))
    # interleave so the first k samples cover many photos
    order = [i * per + j for j in range(per) for i in range(len(loaded))]
    batch = torch.stack([tensors[i] for i in order[:n]])
    return batch, ImageSet(images.paths, images.source, images.licences, skipped=bad)

"""The built-in natural-image set and user image folders."""

from __future__ import annotations

import pytest
import torch

from edge.data import builtin_images, folder_images, image_batch
from edge.errors import EdgeError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_builtin_images_are_real_photos_with_licences():
    s = builtin_images()
    assert len(s.paths) >= 10
    assert len(s.licences) == len(s.paths)
    batch, _ = image_batch(16, 64, MEAN, STD, images=s)
    assert batch.shape == (16, 3, 64, 64)
    # natural photos, not noise: images differ from each other and have spatial structure
    assert batch.std(dim=(1, 2, 3)).min() > 0.1
    assert (batch[0] - batch[1]).abs().mean() > 0.1
    neighbour = (batch[:, :, 1:, :] - batch[:, :, :-1, :]).abs().mean()
    assert neighbour < batch.std() * 0.8  # neighbouring pixels correlate, unlike white noise


def test_batch_is_deterministic():
    a, _ = image_batch(6, 32, MEAN, STD, seed=3)
    b, _ = image_batch(6, 32, MEAN, STD, seed=3)
    assert torch.equal(a, b)


def test_folder_recursive_and_corrupt_images_counted(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "sub" / "red.png")
    Image.new("RGB", (30, 40), (10, 200, 10)).save(tmp_path / "green.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    s = folder_images(tmp_path)
    assert len(s.paths) == 3
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        batch, info = image_batch(4, 16, MEAN, STD, images=s)
    assert info.skipped == 1 and batch.shape == (4, 3, 16, 16)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeError, match="holds no images"):
        folder_images(tmp_path)
    with pytest.raises(EdgeError, match="does not exist"):
        folder_images(tmp_path / "nope")

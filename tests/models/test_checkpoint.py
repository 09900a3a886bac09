"""Checkpoint reading: safe by default, wrappers unwrapped, key errors that say what is wrong."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edge.errors import EdgeError
from edge.models._checkpoint import load_strict, read_state_dict


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def _sd() -> dict[str, torch.Tensor]:
    return {"0.weight": torch.randn(4, 3, 3, 3), "0.bias": torch.randn(4), "1.weight": torch.ones(4)}


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "module_prefix"])
def test_wrappers_and_formats(tmp_path, wrap):
    sd = _sd()
    obj = {
        "plain": sd,
        "model": {"model": sd, "epoch": 3},
        "state_dict": {"state_dict": sd, "optimizer": {}},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    torch.save(obj, tmp_path / "c.pth")
    got = read_state_dict(tmp_path / "c.pth")
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    save_file(sd, str(tmp_path / "c.safetensors"))
    assert set(read_state_dict(tmp_path / "c.safetensors")) == set(sd)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_with_code_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        torch.save({"model": _Evil()}, f, pickle_module=pickle)
    with pytest.raises(EdgeError, match="arbitrary unpickling"):
        read_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"garbage")
    with pytest.raises(EdgeError, match="not a valid PyTorch file|could not be read"):
        read_state_dict(tmp_path / "x.pth")
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(EdgeError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "x.safetensors")
    with pytest.raises(EdgeError, match="does not exist"):
        read_state_dict(tmp_path / "none.pth")


def test_strict_load_names_missing_unexpected_and_mismatched_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 1), nn.Linear(8, 2))
    sd = dict(model.state_dict())
    sd.pop("2.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["1.weight"] = torch.zeros(9, 4, 1, 1)
    with pytest.raises(EdgeError) as e:
        load_strict(model, sd, "tiny", "'c.pth'")
    msg = str(e.value)
    assert "1 missing (2.bias)" in msg
    assert "1 unexpected (extra.weight)" in msg
    assert "1.weight (9, 4, 1, 1) vs (8, 4, 1, 1)" in msg


def test_strict_load_counts_beyond_first_three():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(5)])
    with pytest.raises(EdgeError, match=r"10 missing \(0.weight, 0.bias, 1.weight, \+7 more\)"):
        load_strict(model, {}, "tiny", "'c.pth'")

"""Atomic outputs: an interrupted writer leaves neither a partial file nor a stray temp."""

from __future__ import annotations

import json

import pytest

from edge._io import append_jsonl, atomic_path, read_jsonl, sha256_path, write_json


def test_atomic_file_replaced_only_on_success(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_directory_and_keyboard_interrupt(tmp_path):
    target = tmp_path / "model.mlpackage"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights.bin").write_bytes(b"x" * 10)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_bytes(b"y")
    assert (target / "weights.bin").read_bytes() == b"y"


def test_jsonl_survives_torn_last_line(tmp_path):
    f = tmp_path / "trials.jsonl"
    append_jsonl(f, {"trial": 0})
    append_jsonl(f, {"trial": 1})
    with open(f, "a") as fh:
        fh.write('{"trial": 2, "lat')  # writer killed mid-line
    assert [r["trial"] for r in read_jsonl(f)] == [0, 1]


def test_sha256_of_dir_changes_with_content(tmp_path):
    d = tmp_path / "pkg"
    d.mkdir()
    (d / "a").write_bytes(b"1")
    h1 = sha256_path(d)
    (d / "a").write_bytes(b"2")
    assert sha256_path(d) != h1

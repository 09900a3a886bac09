"""timm as a reference implementation for checkpoint-layout tests.

timm imports parts of torchvision at import time (``FrozenBatchNorm2d``, transforms, datasets).
PyPI's torchvision cannot be imported beside the CPU torch wheel this project pins ("operator
torchvision::nms does not exist"), so it is not installed. This module stands in for torchvision with
empty placeholders before importing timm: a mock of something that cannot exist on this machine, used
only so timm's model code (which needs none of torchvision) can run as a reference.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

import pytest


class _AnyMeta(type):
    """Class-level attributes (e.g. ``InterpolationMode.NEAREST``) are placeholders too."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _AnyMeta(name, (), {})
        setattr(cls, name, value)
        return value


class _Placeholder(types.ModuleType):
    """Any attribute is a fresh placeholder class; nothing from torchvision is ever called."""

    __path__: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _AnyMeta(name, (), {})
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Placeholder(spec.name)

    def exec_module(self, module):
        module.__version__ = "0.0.0+placeholder"


def import_timm():
    """Import timm with the torchvision stand-in; skip if timm itself is not installed."""
    try:
        import torchvision  # noqa: F401  (a working torchvision wins)
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.meta_path.insert(0, _Finder())
    return pytest.importorskip("timm")

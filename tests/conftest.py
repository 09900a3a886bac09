"""Shared test fixtures.

``require_tool(name)`` skips a test when a system tool (adb, sshd, chromium) is missing on a user's
laptop, but fails it when EDGE_REQUIRE_SYSTEM_TOOLS=1 (set by .ci/run), so CI never skips silently.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_SYSTEM_TOOLS = os.environ.get("EDGE_REQUIRE_SYSTEM_TOOLS") == "1"


def require_tool(*candidates: str) -> str:
    """Return the first tool found on PATH (or as an absolute path); skip or fail if none is."""
    for c in candidates:
        found = shutil.which(c) or (c if os.path.isabs(c) and os.access(c, os.X_OK) else None)
        if found:
            return found
    msg = f"system tool not found: {' / '.join(candidates)}"
    if REQUIRE_SYSTEM_TOOLS:
        pytest.fail(msg + " (EDGE_REQUIRE_SYSTEM_TOOLS=1: CI must install it)")
    pytest.skip(msg)

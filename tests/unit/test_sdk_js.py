"""The browser SDK's pure logic (tests/js/*.test.mjs), run by Node's built-in test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_sdk_js_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (20 or newer) is needed for the SDK's tests: apt-get install nodejs")
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))
    assert tests, "no tests/js/*.test.mjs found"
    result = subprocess.run(
        [node, "--test", *tests], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every file ran, and at least one test of each.
    assert "# fail 0" in result.stdout, result.stdout

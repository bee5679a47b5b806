"""The package's layers hold: run never imports analysis, and models, kernels and tasks import none of run,
analysis, checks or the CLI (the contracts in .importlinter, checked by import-linter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    beside = Path(sys.executable).parent / "lint-imports"  # the test's own environment, activated or not
    lint = str(beside) if beside.exists() else shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is missing: it comes with the [dev] extra (import-linter)")
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout

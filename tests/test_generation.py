"""The committed blocking flavor matches what tools/run_unasync.py generates from the async one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TIMEOUT_SCALE

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "tools" / "run_unasync.py"


@pytest.mark.timeout(120)
def test_generated_sync_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110 * TIMEOUT_SCALE,
        check=False,
    )
    assert result.returncode == 0, (
        "tools/run_unasync.py --check failed; run `python tools/run_unasync.py`:\n"
        + result.stdout
        + result.stderr
    )

"""The documentation site builds with ``mkdocs build --strict``: no warning, no broken link.

mkdocs, mkdocs-material and mkdocstrings come with the ``dev`` extra, so this runs in CI; it
is skipped only where mkdocs is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TIMEOUT_UNIT

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 24 * TIMEOUT_UNIT


@pytest.mark.timeout(2 * BUILD_TIMEOUT)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about MkDocs 2.0
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    for page in ("index.html", "getting-started/index.html", "reference/async/index.html"):
        assert (site / page).is_file(), page
    # The API reference is generated from the docstrings of both flavors.
    reference = (site / "reference" / "sync" / "index.html").read_text(encoding="utf-8")
    assert 'id="wsclient.sync.WebSocketConnection.receive_text"' in reference

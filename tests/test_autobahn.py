"""The Autobahn client conformance suite (kosoku's fuzzing server), one test per flavor.

Each test runs ``tools/autobahn.py``'s code on the whole suite (517 cases) and asserts the
bar that the tool documents: every case OK with a clean close, except the three cases that
are informational by design and the runner differences that the tool checks on the wire.
A flavor takes about 5 to 6 minutes on a 2-core machine; run only these with
``pytest -m autobahn``, or leave them out with ``pytest -m "not autobahn"``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "autobahn.py"
FULL_SUITE = 517


def _load_tool() -> ModuleType:
    # Not importable by name: "autobahn" is also a package that kosoku puts on its path.
    name = "wsclient_tools_autobahn"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.autobahn
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_autobahn_suite(flavor: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Many cases expect wsclient to fail the connection: its warnings would only be noise.
    caplog.set_level(logging.ERROR, logger="wsclient")
    tool = _load_tool()
    run = tool.run_flavor(flavor, outdir=tmp_path / flavor)
    summary = tool.format_text([run])
    print(summary)  # the per-section table and the wall time, shown with -s or on failure
    assert run.case_count == FULL_SUITE, summary
    assert len(run.cases) == FULL_SUITE, summary
    assert run.problems() == [], summary
    # Every case is accounted for: OK, informational by design, or a checked runner difference.
    verdicts = {case.verdict for case in run.cases.values()}
    assert verdicts <= {"ok", "informational", "runner"}, summary

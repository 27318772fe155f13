"""Every protocol test runs with each frame parser this build has: compiled and pure Python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wsclient.protocol import connection

PARSERS = ["python"] if connection._c_parse_messages is None else ["c", "python"]


@pytest.fixture(autouse=True, params=PARSERS)
def frame_parser(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "python":
        mp = pytest.MonkeyPatch()
        mp.setattr(connection, "parse_messages", connection._py_parse_messages)
        mp.setattr(connection, "_c_parse_messages", None)
        yield "python"
        mp.undo()
    else:
        yield "c"

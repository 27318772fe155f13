"""Every ```python block in docs/*.md runs, so that the examples in the docs cannot rot.

Each block runs as a program of its own, in a subprocess (``sys.executable``), with
``WSCLIENT_DOCS_URL`` set to the URL of a running echo server (``WebSocketTestServer``), the
convention docs/getting-started.md explains: examples read
``url = os.environ.get("WSCLIENT_DOCS_URL", "ws://localhost:8765")``.

Blocks inside content tabs (indented) count too. A block is skipped only when the line
right before its fence (blank lines aside) is ``<!-- no-test -->``: keep that for the rare
fragment or snippet that needs a server of its own on the internet.

Tests are parametrized by file and block index (``receiving.md:3``); a failure shows the
line of the block in its file, the program's output and its exit code.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient.testing import WebSocketTestServer

DOCS = Path(__file__).resolve().parent.parent / "docs"
URL_VARIABLE = "WSCLIENT_DOCS_URL"
NO_TEST = "<!-- no-test -->"
# An example connects, exchanges a few messages and closes: well within this, even loaded.
RUN_TIMEOUT = 6 * TIMEOUT_UNIT

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Example:
    """One fenced Python block of a docs page."""

    path: Path
    index: int  # among the page's Python blocks, from 0, skipped ones included
    line: int  # of the opening fence, from 1
    code: str
    skipped: bool

    @property
    def name(self) -> str:
        return self.path.relative_to(DOCS).as_posix()


def extract_examples(path: Path) -> list[Example]:
    """Return the fenced ```python blocks of a Markdown file, dedented, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    examples: list[Example] = []
    position = 0
    while position < len(lines):
        match = _FENCE_OPEN.match(lines[position])
        if match is None:
            position += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        language = match.group("info").strip().split(" ", 1)[0].lower()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = position + 1
        while end < len(lines) and not close.match(lines[end]):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{position + 1}: unclosed code fence")
        if language in ("python", "py"):
            body = [
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[position + 1 : end]
            ]
            code = textwrap.dedent("\n".join(body)) + "\n"
            examples.append(
                Example(path, len(examples), position + 1, code, _marked_no_test(lines, position))
            )
        position = end + 1
    return examples


def _marked_no_test(lines: list[str], fence: int) -> bool:
    previous = fence - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    return previous >= 0 and lines[previous].strip() == NO_TEST


def _all_examples() -> Iterator[Example]:
    for path in sorted(DOCS.rglob("*.md")):
        yield from extract_examples(path)


def _params(*, runnable: bool) -> list[Any]:
    return [
        pytest.param(example, id=f"{example.name}:{example.index}")
        for example in _all_examples()
        if example.skipped is not runnable
    ]


@pytest.mark.parametrize("example", _params(runnable=False))
def test_snippets_marked_no_test_still_compile(example: Example) -> None:
    # Fragments that need another library or server cannot run, but must stay valid Python.
    compile(
        example.code,
        f"{example.path.name}:{example.line}",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,  # fragments of async code
    )


@pytest.fixture(scope="module")
def docs_url() -> Iterator[str]:
    with WebSocketTestServer() as server:
        yield server.url
    assert not server.errors, server.errors


@pytest.mark.parametrize("example", _params(runnable=True))
def test_docs_example(example: Example, docs_url: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env[URL_VARIABLE] = docs_url
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONSTARTUP", None)
    script = tmp_path / f"{example.path.stem}_{example.index}.py"
    script.write_text(example.code, encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"docs/{example.name}, line {example.line}: still running after {RUN_TIMEOUT} s\n"
            f"--- stdout ---\n{exc.stdout!s}\n--- stderr ---\n{exc.stderr!s}"
        )
    if result.returncode != 0:
        pytest.fail(
            f"docs/{example.name}, line {example.line}: exit code {result.returncode}\n"
            f"--- code ---\n{example.code}--- stdout ---\n{result.stdout}\n"
            f"--- stderr ---\n{result.stderr}"
        )


def test_examples_were_found() -> None:
    """Guards the extraction itself: the docs have examples, tabs included, and few skips."""
    examples = list(_all_examples())
    assert len(examples) >= 40
    assert any(example.code.startswith("import asyncio") for example in examples)
    skipped = [example for example in examples if example.skipped]
    assert len(skipped) <= len(examples) // 10, [f"{e.name}:{e.index}" for e in skipped]


def test_extract_examples_handles_tabs_and_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """\
            # Page

            ```sh
            pip install wsclient
            ```

            === "Async"

                ```python
                print("async")
                ```

            === "Sync"

                <!-- no-test -->
                ```python
                print("sync")
                ```

            ````markdown
            ```python
            not an example
            ```
            ````
            """
        ),
        encoding="utf-8",
    )
    examples = extract_examples(page)
    assert [(e.index, e.line, e.code, e.skipped) for e in examples] == [
        (0, 9, 'print("async")\n', False),
        (1, 16, 'print("sync")\n', True),
    ]

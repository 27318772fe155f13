"""A griffe extension for the documentation site (mkdocs.yml loads it): reST bits to Markdown.

The docstrings in ``src/`` are Google style, read by people in an editor as much as by the
site, so they keep two reStructuredText habits that Markdown does not know:

* roles such as ``:class:`WebSocketClient``` and ``:meth:`~ServerSession.receive```: each
  becomes a code span linked to the object's entry in the API reference. The name is
  resolved from the docstring's own scope (as Python would), then among wsclient's public
  names (the sync flavor's first in a sync docstring). The link is optional: a name that
  has no entry on the site stays a plain code span, with no warning.
* literal blocks introduced by a paragraph ending in ``::``: each becomes a fenced block
  (Python, or text for a tree drawing such as the exception hierarchy).

Only the rendered site changes; the source is never rewritten.
"""

from __future__ import annotations

import functools
import html
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|attr|func|data|exc|mod|obj):`(?P<target>[^`]+)`")
_PUBLIC_MODULES = ("wsclient", "wsclient.exceptions", "wsclient.testing", "wsclient.protocol")


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrites reST roles and literal blocks in wsclient's docstrings (see the module)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "wsclient":
            return
        collection = loader.modules_collection
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is None:
                continue
            text = _literal_blocks(docstring.value)
            docstring.value = _ROLE.sub(functools.partial(_link, obj, collection=collection), text)


def _link(obj: griffe.Object, match: re.Match[str], *, collection: Any) -> str:
    written = match.group("target")
    short = written.startswith("~")
    target = written.lstrip("~.")
    shown = target.rsplit(".", 1)[-1] if short else target
    identifier = _resolve(obj, target, collection)
    code = f"<code>{html.escape(shown)}</code>"
    if identifier is None:
        return code
    return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'


def _resolve(obj: griffe.Object, target: str, collection: Any) -> str | None:
    head, _, rest = target.partition(".")
    candidates: list[str] = []
    if head == "wsclient":
        candidates.append(target)
    else:
        try:
            resolved = obj.resolve(head)
        except griffe.NameResolutionError:
            pass
        else:
            candidates.append(f"{resolved}.{rest}" if rest else resolved)
        modules = list(_PUBLIC_MODULES)
        if "._sync." in f"{obj.path}.":
            modules.insert(0, "wsclient.sync")
        candidates.extend(f"{module}.{target}" for module in modules)
    for candidate in candidates:
        try:
            found = collection.get_member(candidate)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        try:
            return str(found.final_target.path if found.is_alias else found.path)
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
    return None


def _literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.rstrip().endswith("::"):
            out.append(line)
            index += 1
            continue
        # The block: the following blank lines, then the lines indented more than this one.
        indent = len(line) - len(line.lstrip())
        end = index + 1
        block: list[str] = []
        while end < len(lines):
            candidate = lines[end]
            if candidate.strip() and len(candidate) - len(candidate.lstrip()) <= indent:
                break
            block.append(candidate)
            end += 1
        if not any(part.strip() for part in block):
            out.append(line)
            index += 1
            continue
        while block and not block[-1].strip():
            block.pop()
        code = textwrap.dedent("\n".join(block)).strip("\n")
        language = "python"
        if "──" in code:  # a tree drawing; reST-style ``literals`` in it lose their quotes
            language, code = "text", code.replace("``", "")
        lead = line.rstrip()[:-2].rstrip()
        if lead.strip():
            out.append(lead + ":")
        prefix = " " * indent
        out.append("")
        out.append(f"{prefix}```{language}")
        out.extend(prefix + part if part else "" for part in code.split("\n"))
        out.append(f"{prefix}```")
        out.append("")
        index = end
    return "\n".join(out)

"""Griffe extension for the API reference: reST roles in docstrings become Markdown code spans.

The docstrings are Google style, and some name other objects the Sphinx way (``:class:`~avtoolkit.x.Y```). Markdown
has no roles, so they would render as literal text; here ``:role:`~a.b.C``` becomes `` `C` `` and ``:role:`a.b.C```
becomes `` `a.b.C` ``. A paragraph that ends in ``::`` (a reST literal-block marker) ends in ``:``; the indented
block after it is already a Markdown code block.
"""

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)


def _code_span(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def convert(text: str) -> str:
    """The docstring ``text`` with reST roles as code spans and ``::`` markers as ``:``."""
    return _LITERAL.sub(":", _ROLE.sub(_code_span, text))


class ReSTRoles(griffe.Extension):
    """Rewrite every loaded docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Convert ``obj``'s docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)

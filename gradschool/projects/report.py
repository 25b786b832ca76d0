"""Facts for a notebook's "how this framework did it" section, measured rather than asserted.

`code_lines` counts what a reader has to read of a function: its source lines without the
docstring, comments and blank lines. Every Part 3 notebook counts its exported functions with
it, so the four frameworks' figures are counted the same way.
"""

from __future__ import annotations

import ast
import inspect
import textwrap


def code_lines(function) -> int:
    """Lines of `function`'s source (a function, method or class), without its docstring,
    comments and blank lines."""
    source = textwrap.dedent(inspect.getsource(function))
    node = ast.parse(source).body[0]
    skip = set()
    if ast.get_docstring(node) is not None:
        docstring = node.body[0]
        skip = set(range(docstring.lineno, docstring.end_lineno + 1))
    return sum(1 for number, line in enumerate(source.splitlines(), start=1)
               if number not in skip and line.strip() and not line.strip().startswith("#"))

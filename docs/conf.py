"""Sphinx configuration of the fsnn documentation site.

Build (``pip install -e ".[docs]"`` first)::

    sphinx-build -W --keep-going -b html docs build/docs

Two pages are generated when the sources are read, so that they cannot go stale:

- ``api.md``: the marker ``<!-- fsnn-api -->`` becomes an autosummary table and one
  autodoc entry for every name in ``fsnn.__all__`` (names resolve lazily through
  ``fsnn.__getattr__``; a new public name is documented by exporting it, nothing else).
- ``cli.md``: the marker ``<!-- fsnn-cli -->`` becomes sphinx-argparse's reference of
  the parser behind the ``fsnn`` console script, found from ``[project.scripts]`` in
  ``pyproject.toml`` (so a move of the CLI module needs no edit here).

Public names are documented as ``fsnn.NAME``, never by the module that defines them.
"""

from __future__ import annotations

import inspect
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, whatever fsnn is installed

import fsnn  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

project = "fsnn"
author = "the fsnn authors"
copyright = "2026, the fsnn authors"
release = PYPROJECT["project"]["version"]
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](#a-heading) links inside the notes

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
autosummary_generate = False  # the API page is generated below, no stub files
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"fsnn {release}"


# --------------------------------------------------------------------- the API page


def _kind(name: str) -> str:
    value = getattr(fsnn, name)
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "function"
    return "data"


def _summary(name: str) -> str:
    """The first paragraph of a name's docstring, on one line (not autosummary's first
    sentence, which stops at "Eq." or "eqs.")."""
    value = getattr(fsnn, name)
    if _kind(name) == "data":
        return f"``{value!r}``"
    doc = inspect.getdoc(value) or ""
    return _escape_line(" ".join(doc.split("\n\n", 1)[0].split()))


def api_rst() -> str:
    """reStructuredText documenting every name of ``fsnn.__all__`` as ``fsnn.NAME``: a
    table of the names with their summaries, then one autodoc entry per name, by kind."""
    names = list(fsnn.__all__)
    out = [".. currentmodule:: fsnn", "", ".. list-table::", "   :widths: 30 70", ""]
    for name in names:
        out += [f"   * - :py:obj:`{name}`", f"     - {_summary(name)}"]
    titles = {"function": "Functions", "class": "Classes", "data": "Constants"}
    for kind in ("function", "class", "data"):
        members = sorted((n for n in names if _kind(n) == kind), key=str.lower)
        if not members:
            continue
        out += ["", titles[kind], "-" * len(titles[kind]), ""]
        for name in members:
            if kind == "data":  # autodata would show the docstring of the value's type
                out += [f".. py:data:: {name}", f"   :value: {getattr(fsnn, name)!r}", ""]
            else:
                out += [f".. auto{kind}:: {name}", ""]
    return "\n".join(out)


def api_markdown() -> str:
    return "```{eval-rst}\n" + api_rst() + "\n```\n"


# --------------------------------------------------------------------- the CLI page


def cli_markdown() -> str:
    """sphinx-argparse's directive on the parser of the ``fsnn`` console script."""
    target = PYPROJECT["project"]["scripts"]["fsnn"]  # "package.module:main"
    module = target.split(":")[0]
    return "\n".join(
        ["```{argparse}", f":module: {module}", ":func: build_parser", ":prog: fsnn", "```", ""]
    )


# --------------------------------------------------------------------- docstrings

# fsnn's docstrings write set sizes and norms as plain text (``TO = |G ∩ P| / |G|``),
# which reStructuredText reads as substitution references; fsnn defines none, so each
# such pair is text: escape it, outside inline literals, tables, literal blocks, doctests.
_BARS = re.compile(r"(?<![\w\\|])\|(?=[^\s|])([^|`\n]*?[^\s|])\|(?![\w|])")
_INLINE_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")


def _escape_line(line: str) -> str:
    parts = _INLINE_LITERAL.split(line)  # odd items are inline literals and roles' targets
    for k in range(0, len(parts), 2):
        parts[k] = _BARS.sub(lambda m: "\\|" + m.group(1) + "\\|", parts[k])
    return "".join(parts)


def _escape_bars(app, what, name, obj, options, lines: list[str]) -> None:
    literal = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if literal and stripped and not line.startswith((" ", "\t")):
            literal = False
        if literal or stripped.startswith(("|", "+", ">>>", "...")):
            continue
        lines[i] = _escape_line(line)
        literal = stripped.endswith("::")


GENERATED = {"api": ("<!-- fsnn-api -->", api_markdown), "cli": ("<!-- fsnn-cli -->", cli_markdown)}


def _generate(app, docname: str, source: list[str]) -> None:
    if docname in GENERATED:
        marker, make = GENERATED[docname]
        if marker not in source[0]:
            raise RuntimeError(f"docs/{docname}.md lost its marker {marker}")
        source[0] = source[0].replace(marker, make())


def setup(app):
    app.connect("source-read", _generate)
    app.connect("autodoc-process-docstring", _escape_bars)
    return {"parallel_read_safe": True}

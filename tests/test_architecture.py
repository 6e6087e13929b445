"""Architecture rules checked on the source: no import cycle among fsnn's modules, and
a repository that stands alone (docs/method.md cited, no outside files, no machine paths).

The import graph is read with ``ast`` (nothing is imported). An edge A -> B is any
``import``/``from ... import`` in module A that names module B, at module level or
inside a function (a lazy import still ties the two modules together); imports under
``if TYPE_CHECKING:`` are excluded (they never run). Importing ``pkg.sub`` is an edge
to ``pkg.sub`` only, not to ``pkg``'s ``__init__``: that the parent package runs first
is Python's rule, not a dependency the code chose.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fsnn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import node outside ``if TYPE_CHECKING:`` bodies (their ``else`` counts)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """fsnn module -> the fsnn modules it imports (see the module docstring)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import sub` names the submodule; `from mod import obj` the module
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [s for s in subs if s in modules] or [base]
                if base in modules and any(s not in modules for s in subs):
                    targets.append(base)
            for target in targets:
                # `import fsnn.a.b` without a module of that exact name: its longest module prefix
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(PACKAGE):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def _path_in(component: list[str], graph: dict[str, set[str]]) -> str:
    """One cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        back = [n for n in nxt if n == start]
        if back and len(path) > 1:
            return " -> ".join([*path, start])
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            return " <-> ".join(component)
        path.append(fresh[0])
        seen.add(fresh[0])


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking() -> None:
    tree = ast.parse(
        "import a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\n"
        "def f():\n    import c\n"
    )
    names = sorted(alias.name for node in _imports(tree) for alias in node.names)
    assert names == ["TYPE_CHECKING", "a", "c"]


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert _path_in(["a", "b", "c"], graph) == "a -> b -> c -> a"
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_fsnn() -> None:
    graph = import_graph()
    assert "fsnn.judges.base" in graph and "fsnn.errors" in graph["fsnn.judges.base"]
    found = cycles(graph)
    assert not found, "import cycles in fsnn/:\n" + "\n".join(_path_in(c, graph) for c in found)


# --------------------------------------------------------------- layers (docs/architecture.md)

# folder (or top-level module) -> layer; a module may import its own folder, any lower
# layer, and the same-layer folders listed in SAME_LAYER_ALLOWED (docs/architecture.md)
LAYERS = {
    "errors": 0,
    "store": 1,
    "backends": 1,
    "models": 1,
    "steering": 2,
    "judges": 2,
    "search": 3,
    "analysis": 3,
    "experiment": 4,
    "cli": 5,
    "__main__": 5,
    "": 5,
}
SAME_LAYER_ALLOWED = {("models", "store"), ("models", "backends")}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for a, targets in sorted(graph.items()):
        fa = _folder(a)
        for b in sorted(targets):
            fb = _folder(b)
            if fa == fb or LAYERS[fb] < LAYERS[fa] or (fa, fb) in SAME_LAYER_ALLOWED:
                continue
            if LAYERS[fa] == LAYERS[fb] == max(LAYERS.values()):
                continue  # the front door (cli, __main__, the package root) is one layer
            found.append(f"{a} -> {b}")
    return found


def test_every_folder_has_a_layer() -> None:
    folders = {_folder(name) for name in import_graph()}
    assert folders <= set(LAYERS), f"folders without a layer: {sorted(folders - set(LAYERS))}"


def test_upward_import_finder_finds_one() -> None:
    assert upward_imports({"fsnn.store.files": {"fsnn.search.run"}}) == [
        "fsnn.store.files -> fsnn.search.run"
    ]
    assert upward_imports({"fsnn.search.run": {"fsnn.store.files", "fsnn.search.config"}}) == []


def test_no_upward_imports_in_fsnn() -> None:
    found = upward_imports(import_graph())
    assert not found, "imports of a higher layer (docs/architecture.md):\n" + "\n".join(found)


def test_fsnn_has_at_most_twelve_top_level_entries() -> None:
    entries = [
        p.name
        for p in (ROOT / PACKAGE).iterdir()
        if p.name != "__pycache__" and p.suffix != ".typed"
    ]
    assert len(entries) <= 12, sorted(entries)


def test_readme_layout_table_matches_the_tree() -> None:
    """Every folder and top-level module of fsnn/ has a row in the README's layout table, and
    every path the table names exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(fsnn/[\w/.]*)`", section))
    for path in named:
        assert (ROOT / path).exists(), f"README layout names {path}, which does not exist"
    tree = {
        f"fsnn/{p.name}/" if p.is_dir() else f"fsnn/{p.name}"
        for p in (ROOT / PACKAGE).iterdir()
        if p.name != "__pycache__"
    }
    missing = sorted(tree - named)
    assert not missing, f"README layout table lacks: {missing}"


def test_each_folder_says_what_it_holds_and_may_import() -> None:
    for init in sorted((ROOT / PACKAGE).glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "May import" in doc, (
            f"{init.parent.name}/__init__.py: no docstring with 'May import'"
        )


# --------------------------------------------------------------- the repository stands alone

# Built from pieces so that this file does not match itself.
_OUTSIDE_DOC = re.compile(r"\b" + "METHOD" + r"\.md\b")
_MACHINE_PATH = re.compile(
    r"(?<![\w.])/(?:" + "|".join(["work", "root", "home", "Users", "mnt", "tmp/bash"]) + r")/"
)
_CITATION = re.compile(r"docs/method\.md,? §(\d+(?:\.\d+)?)")


def _tracked_text_files() -> dict[str, str]:
    """Path -> text of every tracked (or new, not ignored) file that is UTF-8 text."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    texts = {}
    for name in filter(None, listed):
        path = ROOT / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (figures)
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def _hits(pattern: re.Pattern[str], texts: dict[str, str]) -> list[str]:
    return [
        f"{name}:{n}: {line.strip()[:120]}"
        for name, text in sorted(texts.items())
        for n, line in enumerate(text.splitlines(), start=1)
        if pattern.search(line)
    ]


def test_the_patterns_match_what_they_must() -> None:
    assert _OUTSIDE_DOC.search("see " + "METHOD" + ".md §3") and not _OUTSIDE_DOC.search(
        "docs/method.md"
    )
    assert _MACHINE_PATH.search('DEFAULT = "/' + 'work/shared/data/x.csv"')
    assert _MACHINE_PATH.search("cd /" + "home/user/fsnn")
    assert not _MACHINE_PATH.search("../shared/data/x.csv") and not _MACHINE_PATH.search("a/work/b")
    assert _CITATION.findall("docs/method.md §2.5, docs/method.md, §10") == ["2.5", "10"]


def test_no_reference_to_files_outside_the_repository() -> None:
    hits = _hits(_OUTSIDE_DOC, _tracked_text_files())
    assert not hits, "cite docs/method.md §N instead:\n" + "\n".join(hits)


def test_no_absolute_machine_paths() -> None:
    hits = _hits(_MACHINE_PATH, _tracked_text_files())
    assert not hits, "absolute machine paths in the repository:\n" + "\n".join(hits)


def _method_sections() -> set[str]:
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#+ §(\d+(?:\.\d+)?) ", text, re.M)) | set(
        re.findall(r"^- \*\*§(\d+(?:\.\d+)?) ", text, re.M)
    )


def test_method_doc_has_the_ten_sections_and_every_citation_resolves() -> None:
    sections = _method_sections()
    assert {str(k) for k in range(1, 11)} <= sections
    cited = {
        (name, number)
        for name, text in _tracked_text_files().items()
        for number in _CITATION.findall(text)
    }
    assert cited, "no file cites docs/method.md"
    missing = sorted(f"{name}: §{number}" for name, number in cited if number not in sections)
    assert not missing, "citations of sections docs/method.md does not have:\n" + "\n".join(missing)


def test_method_doc_quotes_the_templates_fsnn_uses() -> None:
    from fsnn.judges.prompts import QUALITY_TEMPLATE, SIMPLEQA_TEMPLATE
    from fsnn.steering.prompts import PAPER_TEMPLATES

    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    for field in ("baseline", "enrichment", "reference_header", "reference_body", "steering"):
        assert f"`{getattr(PAPER_TEMPLATES, field)!r}`" in text, field
    assert SIMPLEQA_TEMPLATE in text and QUALITY_TEMPLATE in text
    for eq in range(1, 8):
        assert f"({eq}) " in text, f"equation ({eq}) is not numbered in docs/method.md"


def test_no_code_selects_a_method_with_the_sel_keyword():
    # ``method`` is a keyword of xarray's ``sel`` itself (the lookup method): selecting
    # a method by that keyword silently returns every method. Select with a dict.
    pattern = ".sel(" + "method="
    offenders = []
    for folder in ("fsnn", "experiments", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern in line.replace(" ", ""):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert not offenders, offenders

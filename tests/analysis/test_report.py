"""fsnn report: one self-contained HTML page whose tables hold the run's numbers."""

from __future__ import annotations

import base64
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from run_fixtures import make_results, make_run

from fsnn import cli
from fsnn.analysis.report import build_report, highlight_answer, write_report
from fsnn.analysis.summary import paired_grid, summarize, summary_grid
from fsnn.store.files import open_run


class Page(HTMLParser):
    """Collects what the checks need: tags, attributes, tables by id, marks, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.marks: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._mark: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "mark":
            self._mark = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "mark" and self._mark is not None:
            self.marks.append("".join(self._mark))
            self._mark = None

    def handle_data(self, data):
        self.text.append(data)
        for buf in (self._cell, self._mark):
            if buf is not None:
                buf.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture
def run(tmp_path):
    judge = np.full((3, 6), 4.0)
    judge[2, 1] = np.nan
    errors = np.full((3, 6), "", dtype=object)
    errors[2, 1] = "timeout"
    res = make_results(judge=judge, judge_error=errors, judge_missing="exclude",
                       readable=np.ones((3, 6), dtype=int))  # fmt: skip
    comp = res["completion"].values.copy()
    comp[1, 0] = 'Sure <script>alert("x")</script> see https://example.com — it was Michio Sugeno.'
    res["completion"] = (("method", "prompt"), comp)
    return make_run(tmp_path / "run", res)


def _self_contained(page: Page) -> list[str]:
    imgs = [a.get("src") or "" for t, a in page.tags if t == "img"]
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
    return imgs


def test_report_is_self_contained_and_its_tables_hold_the_run_numbers(run):
    text = build_report(run)
    page = parse(text)
    imgs = _self_contained(page)
    assert len(imgs) == 6  # fig0, fig2..fig6: no subsets.nc in this run
    s = summarize(open_run(run).results)
    assert page.tables["summary"] == summary_grid(s)
    assert page.tables["paired"] == paired_grid(s)
    body = "".join(page.text)
    assert "segmented: 1 judge failures" in body
    assert "TO >= 0.5 & readable" in [r[0] for r in page.tables["summary"]]
    prov = dict((r[0], r[1]) for r in page.tables["provenance"][1:])
    assert prov["model"] == "tiny-model" and prov["judge_missing"] == "exclude"
    assert '"simpleqa_sha256": "abc123"' in body  # the config, pretty-printed


def test_examples_escape_text_and_mark_the_gold_answer(run):
    page = parse(build_report(run, examples=6))
    body = "".join(page.text)
    assert '<script>alert("x")</script>' in body  # shown as text ...
    assert not any(t == "script" for t, _ in page.tags)  # ... never as a tag
    assert "Michio Sugeno" in page.marks  # the injected completion of prompt 0 holds the answer
    res = open_run(run).results
    for q in res["question"].values:
        assert str(q) in body  # 6 examples of 6 prompts: every question shown


def test_highlight_answer_whole_words_only():
    assert highlight_answer("10 or 1?", "1") == "10 or <mark>1</mark>?"
    assert highlight_answer("a <b>", "zzz") == "a &lt;b&gt;"
    assert '<mark class="word">Sugeno</mark>' in highlight_answer("Sugeno won", "Michio Sugeno")


def test_cli_writes_the_report(run, capsys):
    assert cli.main(["report", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    path = run / "report.html"
    assert parse(path.read_text()).tables["summary"][0][0] == "metric"
    out = run.parent / "elsewhere" / "r.html"
    assert cli.main(["report", str(run), "--out", str(out), "--examples", "2"]) == 0
    assert out.is_file()
    assert cli.main(["report", str(run.parent / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_report_of_the_release(tmp_path_factory):
    folder = os.environ.get("FSNN_RELEASE_DIR")
    if not folder:
        pytest.skip("FSNN_RELEASE_DIR is not set")
    from fsnn.analysis.release import import_release, write_release

    out = tmp_path_factory.mktemp("release")
    write_release(import_release(folder), out)
    path = write_report(out)
    page = parse(path.read_text())
    imgs = _self_contained(page)
    assert len(imgs) == (7 if (out / "subsets.nc").is_file() else 6)
    cells = [c for row in page.tables["summary"] for c in row]
    assert any(c.startswith("66 (25.4%) [") for c in cells)
    assert path.stat().st_size < 5_000_000

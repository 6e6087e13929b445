"""fsnn.store.simpleqa_csv: the one SimpleQA reader (the experiment and the release import)."""

from __future__ import annotations

import csv

import pytest

from fsnn.errors import FsnnError
from fsnn.store.simpleqa_csv import read_simpleqa_csv, simpleqa_path


def _write(path, rows):
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("metadata", "problem", "answer"))
        writer.writerows(rows)
    return path


def test_records_keep_the_text_as_written_and_ids_count_bad_rows(tmp_path, capsys):
    path = _write(
        tmp_path / "qa.csv",
        [
            ("{'topic': 'Art', 'urls': ['u']}", " Who? ", "Someone "),
            ("not a dict", "Q?", "A"),
            ("{'answer_type': 'Date'}", "When?", "1999"),
        ],
    )
    with pytest.raises(
        FsnnError, match=r"qa\.csv: row 2: field 'metadata' is not a Python dict literal"
    ):
        read_simpleqa_csv(path)
    first, third = read_simpleqa_csv(path, on_bad="skip")
    assert "skipped 1 bad SimpleQA row" in capsys.readouterr().err
    assert (first.id, first.problem, first.answer, first.metadata) == (
        0,
        " Who? ",
        "Someone ",
        {"topic": "Art", "urls": ["u"]},
    )
    assert (third.id, third.metadata) == (2, {"answer_type": "Date"})

    from fsnn.experiment.simpleqa import load_simpleqa  # the experiment strips the text

    q = load_simpleqa(path, on_bad="skip")[0]
    assert (q.question, q.answer, q.topic, q.urls) == ("Who?", "Someone", "Art", ("u",))


def test_path_resolution(tmp_path, monkeypatch):
    path = _write(tmp_path / "qa.csv", [("{}", "Q?", "A")])
    assert simpleqa_path(path) == path
    monkeypatch.setenv("FSNN_SIMPLEQA_CSV", str(path))
    assert simpleqa_path() == path
    monkeypatch.setenv("FSNN_SIMPLEQA_CSV", str(tmp_path / "gone.csv"))
    with pytest.raises(FsnnError, match="FSNN_SIMPLEQA_CSV points to a missing file"):
        simpleqa_path()
    with pytest.raises(FsnnError, match="SimpleQA CSV not found"):
        read_simpleqa_csv(tmp_path / "nowhere.csv")

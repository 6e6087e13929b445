"""SimpleQA CSV reading: every malformed file is one FsnnError line naming where."""

from __future__ import annotations

import csv

import pytest

from fsnn.errors import FsnnError
from fsnn.experiment.simpleqa import load_simpleqa

HEADER = ("metadata", "problem", "answer")
GOOD = (
    "{'topic': 'Art', 'answer_type': 'Person', 'urls': ['https://a']}",
    "Who painted X?",
    "Someone",
)


def write_rows(path, rows, header=HEADER):
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_good_file_reads(tmp_path):
    (q,) = load_simpleqa(write_rows(tmp_path / "qa.csv", [GOOD]))
    assert (q.id, q.topic, q.answer_type, q.urls) == (0, "Art", "Person", ("https://a",))


def test_non_utf8_names_file_offset_and_row(tmp_path):
    path = write_rows(tmp_path / "latin1.csv", [GOOD, GOOD, GOOD])
    data = path.read_bytes()
    lines = data.split(b"\r\n")
    lines[2] = lines[2].replace(b"Someone", b"Caf\xe9")  # data row 2, latin-1 byte
    bad = b"\r\n".join(lines)
    path.write_bytes(bad)
    with pytest.raises(FsnnError) as info:
        load_simpleqa(path)
    message = one_line(info)
    assert "latin1.csv" in message and "not UTF-8" in message
    offset = bad.index(b"\xe9")
    assert f"offset {offset}" in message and "data row 2" in message


def test_non_utf8_inside_a_multiline_field_counts_records_not_lines(tmp_path):
    multi = (GOOD[0], "A question\nover two lines?", "Yes")
    path = write_rows(tmp_path / "multi.csv", [multi, GOOD])
    path.write_bytes(path.read_bytes().replace(b"Someone", b"S\xffomeone"))
    with pytest.raises(FsnnError, match=r"data row 2, line 4") as info:
        load_simpleqa(path)
    one_line(info)


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(FsnnError, match=r"empty.csv: empty file") as info:
        load_simpleqa(tmp_path / "empty.csv")
    one_line(info)


def test_missing_column(tmp_path):
    path = write_rows(tmp_path / "qa.csv", [GOOD[:2]], header=HEADER[:2])
    with pytest.raises(FsnnError, match=r"qa.csv: missing column\(s\) answer") as info:
        load_simpleqa(path)
    one_line(info)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ("{not a dict", "row 2: field 'metadata' is not a Python dict literal"),
        ("{[1]: 2}", "row 2: field 'metadata' is not a Python dict literal"),  # TypeError inside
        ("[1, 2]", "row 2: field 'metadata' is not a dict"),
        ("{'urls': 5}", "row 2: field 'metadata': 'urls' is not a list"),
    ],
)
def test_bad_metadata_named_by_row_and_field(tmp_path, metadata, message):
    path = write_rows(tmp_path / "qa.csv", [GOOD, (metadata, "Q?", "A")])
    with pytest.raises(FsnnError, match=message) as info:
        load_simpleqa(path)
    assert "qa.csv" in one_line(info)
    assert [q.id for q in load_simpleqa(path, on_bad="skip")] == [0]


def test_wrong_field_count_and_nul_byte(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("metadata,problem,answer\n{},Q?\n", encoding="utf-8")
    with pytest.raises(FsnnError, match="row 1: 2 fields, expected 3"):
        load_simpleqa(path)
    path.write_text("metadata,problem,answer\n{},Q?,A,extra\n", encoding="utf-8")
    with pytest.raises(FsnnError, match="row 1: 4 fields, expected 3"):
        load_simpleqa(path)
    path.write_bytes(b'metadata,problem,answer\n{},Q?,A\n{},"Q2\x00?",A\n')
    try:
        questions = load_simpleqa(path)
    except FsnnError as exc:  # csv modules before 3.13 refuse NUL bytes
        assert "row 2" in str(exc) and "\n" not in str(exc)
    else:
        assert len(questions) == 2

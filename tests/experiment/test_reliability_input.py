"""Malformed input found before any model loads: CSV files, config.json, CLI options, GGUF files, layer ranges.

(The whole campaign is benchmarks/reliability.py.)
"""

from __future__ import annotations

import re

import pytest

from fsnn.errors import FsnnError

HEADER = "metadata,problem,answer\n"


ROW = "{'topic': 'Art'},Qu'est-ce que l'\u00e9t\u00e9?,\u00e9t\u00e9\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((HEADER + ROW).encode("latin-1"), "not UTF-8 text"),
        ((HEADER + ROW).encode("utf-16"), "not UTF-8 text"),
        (bytes(range(256)) * 2, "not UTF-8 text"),
        (HEADER.encode(), "no question rows"),
    ],
)
def test_bad_csv_files_are_one_line_errors(tmp_path, data, message):
    from fsnn.experiment.simpleqa import load_simpleqa

    path = tmp_path / "qa.csv"
    path.write_bytes(data)
    with pytest.raises(FsnnError, match=message) as info:
        load_simpleqa(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(FsnnError, match="SimpleQA CSV not found"):
        load_simpleqa(tmp_path / "folder.csv")
    path.write_bytes((HEADER + ROW).encode("utf-8"))
    assert load_simpleqa(path)[0].answer == "\u00e9t\u00e9"


def test_select_refuses_repeated_ids_and_empty_strata(tmp_path):
    from fsnn.experiment.simpleqa import load_simpleqa, select_questions

    path = tmp_path / "qa.csv"
    path.write_text(HEADER + ROW + ROW.replace("Art", "Music"), encoding="utf-8")
    questions = load_simpleqa(path)
    with pytest.raises(FsnnError, match=r"more than once: \[1\]"):
        select_questions(questions, ids=(1, 0, 1))
    with pytest.raises(FsnnError, match="stratified questions must be > 0"):
        select_questions(questions, stratified=0)
    assert [q.id for q in select_questions(questions, ids=(1, 0))] == [1, 0]


@pytest.mark.parametrize("damage", [b"{not json", b"\x91\xff\x00garbage", b""])
def test_corrupt_config_json_is_one_line_naming_it(tmp_path, damage):
    from fsnn.experiment.pipeline import _prepare_folder

    (tmp_path / "config.json").write_bytes(damage)
    with pytest.raises(
        FsnnError, match=r"config.json is not valid JSON; remove the folder or use --force-new"
    ):
        _prepare_folder(tmp_path, {"a": 1}, force_new=False)
    _prepare_folder(tmp_path, {"a": 1}, force_new=True)  # the way out the message names


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--limit", "ten"], "--limit"),
        (["--seed", "x"], "--seed"),
        (["--ids", "1,,2"], "--ids"),
        (["--ids", "1,abc"], "--ids"),
        (["--trials", "0"], "--trials"),
    ],
)
def test_cli_option_errors_are_one_line_naming_the_option(tmp_path, capsys, argv, option):
    import fsnn.cli

    with pytest.raises(SystemExit) as info:
        fsnn.cli.main(["run", "--out", str(tmp_path / "run"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fsnn: error: fsnn run: argument {option}: ")
    assert not (tmp_path / "run").exists()


def _refuse_load(*a, **k):
    raise AssertionError("a model was loaded before the options were checked")


def test_a_text_file_named_gguf_is_refused_before_the_run_folder(tmp_path, monkeypatch, capsys):
    import fsnn.cli
    import fsnn.models.load
    from tests.experiment.test_pipeline import write_csv

    monkeypatch.setattr(fsnn.models.load, "load_model", _refuse_load)
    fake = tmp_path / "model.gguf"
    fake.write_text("not a gguf")
    csv_path = write_csv(tmp_path / "qa.csv")
    rc = fsnn.cli.main(
        [
            "run",
            "--simpleqa-csv",
            str(csv_path),
            "--model",
            str(fake),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"{fake} is not a GGUF file" in err
    assert not (tmp_path / "run").exists()


def test_layer_range_past_the_model_is_refused_before_the_run_folder(
    tmp_path, monkeypatch, tiny_gemma2
):
    import json

    import fsnn.models.load
    from fsnn.experiment.pipeline import run_pipeline
    from fsnn.models.load import model_depth
    from tests.experiment.test_pipeline import small_config, write_csv

    monkeypatch.setattr(fsnn.models.load, "load_model", _refuse_load)
    csv_path = write_csv(tmp_path / "qa.csv")
    folder = tmp_path / "model"  # a model folder: its depth is read from config.json, no weights
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    assert model_depth(str(folder)) == 6 and model_depth(str(tmp_path / "none")) is None
    (folder / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 5}}))
    assert model_depth(str(folder)) == 5
    with pytest.raises(FsnnError, match=r"layer range 0-99 outside a model with 5 layers"):
        run_pipeline(
            small_config(model=str(folder), methods=("x=0-99",)),
            tmp_path / "a",
            simpleqa_csv=csv_path,
        )
    assert not (tmp_path / "a").exists()
    with pytest.raises(
        FsnnError, match=rf"layer range 2-40 outside a model with {tiny_gemma2.n_layers} layers"
    ):
        run_pipeline(
            small_config(methods=("x=2-40",)),
            tmp_path / "b",
            simpleqa_csv=csv_path,
            model=tiny_gemma2,
        )
    assert not (tmp_path / "b").exists()


def _gguf_header(pairs):
    import struct

    def s(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    for key, kind, payload in pairs:
        out += s(key) + struct.pack("<I", kind) + payload
    return out


def test_gguf_depth_is_read_from_the_header_without_loading(tmp_path):
    import struct

    from fsnn.models.load import _gguf_block_count, model_depth

    def s(text):
        return struct.pack("<Q", len(text.encode())) + text.encode()

    tokens = (
        struct.pack("<IQ", 8, 3) + s("a") + s("bb") + s("ccc")
    )  # an array of strings before the depth
    scores = struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.1, 0.2, 0.3)
    path = tmp_path / "m.gguf"
    path.write_bytes(
        _gguf_header(
            [
                ("general.architecture", 8, s("llama")),
                ("tokenizer.ggml.tokens", 9, tokens),
                ("tokenizer.ggml.scores", 9, scores),
                ("general.flag", 7, struct.pack("<?", True)),
                ("llama.block_count", 4, struct.pack("<I", 7)),
            ]
        )
        + b"\0" * 64
    )
    assert _gguf_block_count(path) == 7
    assert model_depth(str(path)) == 7  # no converted copy in the cache: the header answers
    path.write_bytes(_gguf_header([("general.architecture", 8, s("llama"))])[:30])  # truncated
    with pytest.raises(
        FsnnError, match=rf"malformed GGUF header in {re.escape(str(path))}: truncated"
    ):
        _gguf_block_count(path)
    path.write_bytes(b"not a gguf")
    with pytest.raises(FsnnError, match=r"is not a GGUF file"):
        _gguf_block_count(path)

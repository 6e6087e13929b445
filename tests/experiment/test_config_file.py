"""Run configs from TOML and the paper preset: precedence, round trip, one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fsnn.errors import FsnnError
from fsnn.experiment.config_file import (
    PAPER_PRESET,
    config_sources,
    format_config,
    load_config_file,
    resolve_run_config,
)
from fsnn.experiment.pipeline import RunConfig
from fsnn.search.objective import ObjectiveConfig
from fsnn.search.run import SearchConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_are_typed(tmp_path):
    path = _toml(
        tmp_path,
        """
model = "gemma3-270m"
limit = 20
ids = [3, 7]
methods = ["full", "early=0-3"]
n_trials = 4
chat_template = true
judge = "none"
backend = "local"
ppl_model = "smollm2-135m"

[objective]
w_to = 1
ppl_cap = 50.0
""",
    )
    values = load_config_file(path)
    assert values["ids"] == (3, 7) and values["methods"] == ("full", "early=0-3")
    assert (
        values["judge"] is None and values["backend"] == "local" and values["chat_template"] is True
    )
    assert values["objective"] == ObjectiveConfig(w_to=1.0, ppl_cap=50.0)
    config = resolve_run_config(values)
    assert config.n_trials == 4 and config.objective.w_ppl == ObjectiveConfig().w_ppl


def test_precedence_flags_over_file_over_preset_over_defaults():
    preset = {"model": "preset-model", "n_trials": 5, "mode": "faithful", "limit": 500}
    file_values = {"n_trials": 3, "mode": "cached"}
    flags = {"mode": "faithful", "limit": None, "seed": None}  # None: flag not given
    c = resolve_run_config(file_values, preset, flags)
    assert (c.model, c.n_trials, c.mode, c.limit) == ("preset-model", 3, "faithful", 500)
    assert c.seed == RunConfig().seed
    src = config_sources(file_values, preset, flags)
    assert (src["model"], src["n_trials"], src["mode"], src["limit"], src["seed"]) == (
        "preset",
        "file",
        "flag",
        "preset",
        "default",
    )


# The paper preset asks for CUDA and the Mistral key, which RunConfig checks on construction:
# on this machine the tests override both through the file layer.
ON_CPU = {"device": "cpu", "judge": None}


def test_paper_preset_is_the_experiment_s_config():
    paper = resolve_run_config(ON_CPU, PAPER_PRESET)
    assert paper.model == "google/gemma-2-2b-it" and paper.load_in_8bit and paper.n_trials == 5
    assert (paper.select, paper.score_on, paper.judge_missing) == ("incorrect", "full", "zero")
    # the paper's search whatever RunConfig's defaults become: (alpha, gamma) ~ U[0.01, 1], TPE with
    # Optuna's 10 random start-up trials, every trial asked at once, eq. (6) unguarded
    search = paper.search_config()
    assert (search.parametrization, search.range, search.sampler) == (
        "alpha_gamma",
        (0.01, 1.0),
        "tpe",
    )
    assert (search.n_startup_trials, search.start_trials, search.batch_trials) == (10, 0, 5)
    assert search.unreadable_penalty == 0.0
    assert search == SearchConfig.paper(
        batch_rows=search.batch_rows
    )  # the preset and the API agree
    assert (
        RunConfig().search_config().parametrization != "alpha_gamma"
    )  # the default is not the paper's
    spec = importlib.util.spec_from_file_location(
        "simpleqa_paper", REPO_ROOT / "experiments" / "simpleqa_paper.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAPER_PRESET is PAPER_PRESET


def test_format_config_round_trips_through_a_file(tmp_path):
    preset = {"model": "gemma3-270m", "n_trials": 4, "limit": 20}
    flags = {"ids": (1, 2, 3), "mode": "cached"}
    config = resolve_run_config({"n_trials": 2}, preset, flags)
    text = format_config(config, config_sources({"n_trials": 2}, preset, flags))
    assert 'mode = "cached"  # flag' in text
    assert "n_trials = 2  # file" in text and 'model = "gemma3-270m"  # preset' in text
    assert "# judge = (none)" not in text and 'judge = "none"  # default' in text
    again = resolve_run_config(load_config_file(_toml(tmp_path, text)))
    assert again == config


@pytest.mark.parametrize(("text", "message"), [
    ("n_trails = 3\n", "unknown key 'n_trails' (not a RunConfig field; did you mean 'n_trials'?)"),
    ('n_trials = "five"\n', "key 'n_trials' must be an integer, got 'five'"),
    ("chat_template = 1\n", "key 'chat_template' must be true/false, got 1"),
    ("methods = \"full\"\n", "key 'methods' must be a list of strings"),
    ("ids = [1, \"x\"]\n", "key 'ids' must be a list of integers"),
    ("[objective]\nw_tok = 1.0\n", "key 'objective' must be a table of w_to, w_ppl, ppl_cap"),
    ("model = \n", "not valid TOML"),
])  # fmt: skip
def test_bad_files_are_one_line_errors_naming_file_and_key(tmp_path, text, message):
    path = _toml(tmp_path, text)
    with pytest.raises(FsnnError) as err:
        load_config_file(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_unknown_flag_and_invalid_value(tmp_path):
    with pytest.raises(FsnnError, match="config file not found"):
        load_config_file(tmp_path / "nope.toml")
    with pytest.raises(FsnnError, match="command line: unknown key 'colour'"):
        resolve_run_config(flag_values={"colour": "red"})
    with pytest.raises(FsnnError, match="mode must be faithful or cached"):
        resolve_run_config({"mode": "fast"})


def test_resolve_from_cli_reads_the_file_and_says_where_values_come_from(tmp_path):
    from fsnn.experiment.config_file import resolve_from_cli

    path = _toml(tmp_path, 'n_trials = 2\nmode = "cached"\ndevice = "cpu"\njudge = "none"\n')
    config, header = resolve_from_cli(path, True, {"mode": "faithful", "seed": None})
    assert (config.n_trials, config.mode, config.model) == (2, "faithful", PAPER_PRESET["model"])
    assert "n_trials = 2  # file" in header and 'mode = "faithful"  # flag' in header
    plain, _ = resolve_from_cli(None, False, {})
    assert plain == RunConfig()


def test_fsnn_run_config_and_paper_flags(tmp_path, monkeypatch, capsys):
    """`fsnn run --config/--paper`: the precedence reaches run_pipeline and the header is printed first."""
    from run_fixtures import make_results

    import fsnn.experiment.pipeline
    from fsnn import cli

    seen = []

    def fake_run(config, out, **kw):
        seen.append(config)
        return make_results(judged=False)

    monkeypatch.setattr(fsnn.experiment.pipeline, "run_pipeline", fake_run)
    path = _toml(
        tmp_path, 'n_trials = 2\nmode = "cached"\nlimit = 4\ndevice = "cpu"\njudge = "none"\n'
    )
    rc = cli.main(
        [
            "run",
            "--config",
            str(path),
            "--mode",
            "faithful",
            "--out",
            str(tmp_path / "r"),
            "--paper",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    (config,) = seen
    assert (config.n_trials, config.mode, config.limit, config.model) == (
        2,
        "faithful",
        4,
        PAPER_PRESET["model"],
    )
    assert out.index('mode = "faithful"  # flag') < out.index(
        "| metric |"
    )  # header before the summary
    assert "n_trials = 2  # file" in out and "load_in_8bit = true  # preset" in out
    bad = _toml(tmp_path, "n_trails = 2\n")
    rc = cli.main(["run", "--config", str(bad), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown key 'n_trails'" in err and err.count("\n") == 1
    assert len(seen) == 1  # refused before anything ran


def test_fsnn_run_search_flags_reach_the_config(tmp_path, monkeypatch):
    """Every parametrization and sampler, start trials and start-up trials are reachable from the CLI."""
    from run_fixtures import make_results

    import fsnn.experiment.pipeline
    from fsnn import cli

    seen = []
    monkeypatch.setattr(
        fsnn.experiment.pipeline,
        "run_pipeline",
        lambda config, out, **kw: seen.append(config) or make_results(),
    )
    rc = cli.main(
        [
            "run",
            "--out",
            str(tmp_path / "r"),
            "--parametrization",
            "norm_relative",
            "--sampler",
            "gp",
            "--start-trials",
            "3",
            "--n-startup-trials",
            "2",
            "--batch-trials",
            "1",
        ]
    )
    assert rc == 0
    search = seen[0].search_config()
    assert (
        search.parametrization,
        search.sampler,
        search.start_trials,
        search.n_startup_trials,
        search.batch_trials,
    ) == ("norm_relative", "gp", 3, 2, 1)

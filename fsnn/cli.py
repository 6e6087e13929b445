"""The ``fsnn`` command line (also ``python -m fsnn``), every subcommand in this one module.

Each handler parses its options, calls the library, and prints; the work lives in the
package (:mod:`fsnn.experiment.pipeline`, :mod:`fsnn.steering.steer`, ...). Errors a user can fix
(:class:`fsnn.errors.FsnnError`, and bad options) print ONE line ``fsnn: error: ...``
and exit 2, never a traceback; every option is checked before any model loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import FsnnError
from .experiment.config import SELECTED_GRADES, RunConfig
from .models import DEFAULT_MODEL
from .search.config import PARAMETRIZATIONS, SAMPLERS
from .steering.modes import MODES
from .steering.specs import OPERATORS

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fsnn: error: {self.prog}: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except None ("not given": the run config decides)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _Formatter(prog, max_help_position=32)


def _ids(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(part) for part in text.split(","))  # an empty item is a typo, not skipped
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"ids must be comma-separated integers, got {text!r}"
        ) from None
    if not ids or min(ids) < 0:
        raise argparse.ArgumentTypeError(f"ids must be SimpleQA row numbers >= 0, got {text!r}")
    return ids


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else a one-line error naming the value."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _add(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=_formatter)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fsnn", description="Fusion Steering (arXiv:2505.22572) with nnsight.")
    parser.add_argument("--version", action="version", version=f"fsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _add(sub, "ask", "answer one question with a model (no steering)")
    p.add_argument("question", help="the prompt text")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="model alias, local folder, .gguf file or hub id"
    )
    p.add_argument("--max-new-tokens", type=_positive, default=40, help="tokens to generate")
    p.add_argument(
        "--chat-template",
        action="store_true",
        help="wrap the question in the model's chat template",
    )
    p.add_argument(
        "--load-in-8bit", action="store_true", help="load the weights in 8 bits (bitsandbytes)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (text, ids)")
    p.set_defaults(func=_ask)

    p = _add(sub, "steer", "one Fusion-Steered answer (capture the reference, then steer)")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="model alias, local folder, .gguf file or hub id"
    )
    p.add_argument("--question", required=True, help="the question to answer")
    p.add_argument(
        "--answer", required=True, help="ground truth that builds the reference (oracle setting)"
    )
    p.add_argument(
        "--explanation", default="", help="explanation appended to the answer in the reference"
    )
    p.add_argument(
        "--strengths",
        default="full:0.5,0.5",
        help="full:ALPHA,GAMMA | seg:a1,a2,a3,g1,g2,g3 | NAME=0-3,8-11:a1,a2,g1,g2",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="faithful",
        help="faithful = the published method (no KV cache); cached = faster approximation",
    )
    p.add_argument("--max-new-tokens", type=_positive, default=100, help="tokens to generate")
    p.add_argument(
        "--load-in-8bit", action="store_true", help="load the weights in 8 bits (bitsandbytes)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (text, ids, ...)")
    p.set_defaults(func=_steer)

    p = _add(sub, "run", "Fusion Steering on SimpleQA, resumable (the main job)")
    _run_options(p)
    _scale_out_options(p)  # issue 24
    p.set_defaults(func=_run)

    _merge_parser(sub)  # issue 24

    p = _add(
        sub,
        "judge-agreement",
        "grade the 1045 released answers with a judge and compare with Mistral's",
    )
    p.add_argument(
        "--judge",
        required=True,
        help="offline (no key, no network), local:MODEL, http:MODEL@BASE_URL or mistral",
    )
    p.add_argument(
        "--split",
        choices=("all", "train", "heldout"),
        default="all",
        help="rows of all prompts, or only the offline calibration's train or held-out prompts "
        "(adds the table with composite accuracy per method and bootstrap intervals)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--n-boot", type=_positive, default=2000, help="bootstrap replicates of the table"
    )
    p.add_argument("--release-dir", help="the authors' release folder (default $FSNN_RELEASE_DIR)")
    p.add_argument(
        "--limit", type=_positive, help="grade a stratified subset of N rows (default: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    p.add_argument(
        "--out", help="output path without suffix (default runs/judge_agreement/<judge>)"
    )
    p.add_argument(
        "--cache", help="judge cache file (default $FSNN_CACHE_DIR/judges/answers.sqlite)"
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the judge cache")
    p.add_argument(
        "--api-key-env", help="http judges: NAME of the env variable holding the API key"
    )
    p.add_argument("--concurrency", type=_positive, help="http judges: requests in flight")
    p.add_argument("--batch-size", type=_positive, help="local judges: prompts per forward pass")
    p.add_argument("--device", help="local judges: torch device")
    p.add_argument("--dtype", help="local judges: float32, bfloat16, float16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_judge_agreement)

    p = _add(
        sub,
        "import-release",
        "import the authors' released CSVs into RUN/results.nc (+ subsets, trial grades)",
    )
    p.add_argument("release_dir", metavar="DIR", help="folder of the released CSVs")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    p.add_argument(
        "--simpleqa-csv",
        metavar="PATH",
        default=None,
        help="simple_qa_test_set.csv for topics and subsets (default: $FSNN_SIMPLEQA_CSV)",
    )
    p.set_defaults(func=_import_release)

    p = _add(sub, "figures", "draw the paper's figures from a run folder's datasets")
    p.add_argument(
        "run", metavar="RUN", help="run folder holding results.nc (+ subsets.nc, trials.nc)"
    )
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default RUN/figures)")
    p.add_argument("--format", default="png,pdf", help="comma-separated formats")
    p.add_argument(
        "--best-of-k",
        action="store_true",
        help="also draw fig. 2 with the release's best-of-k grade histogram (needs trial_grades.nc)",
    )
    p.set_defaults(func=_figures)

    p = _add(sub, "show", "per-prompt view of a run: completions side by side, strengths, trials")
    p.add_argument("run", metavar="RUN", help="run folder (holds results.nc)")
    p.add_argument(
        "--prompt",
        type=int,
        default=None,
        metavar="ID",
        help="SimpleQA id of the prompt to show (a position when the run has no ids); "
        "without it: the prompts sorted by steering gain",
    )
    p.add_argument(
        "--method", default=None, metavar="M", help="only this steered method (None: all)"
    )
    p.add_argument(
        "--width", type=_positive, default=None, help="output width (None: the terminal's)"
    )
    p.add_argument("--limit", type=int, default=50, help="rows of the prompt table (0 = all)")
    p.add_argument(
        "--diff", action="store_true", help="a unified diff instead of side-by-side columns"
    )
    p.set_defaults(func=_show)

    p = _add(
        sub,
        "compare",
        "summary statistics of several runs with paired differences on shared prompts",
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders; later ones are compared with the first"
    )
    p.add_argument(
        "--allow-different",
        action="store_true",
        help="compare runs of different models or datasets",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_compare)

    p = _add(sub, "report", "one self-contained HTML report of a run (tables, figures, examples)")
    p.add_argument("run", metavar="RUN", help="run folder (holds results.nc)")
    p.add_argument(
        "--out", metavar="HTML", default=None, help="output file (None: RUN/report.html)"
    )
    p.add_argument("--examples", type=int, default=12, help="prompts in the examples section")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the random part of the example sample"
    )
    p.set_defaults(func=_report)
    return parser


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m for m in text.split(",") if m)


# ``fsnn run``'s options that set a config field: (flag, flat RunConfig field, argparse
# keywords, help with {default} filled from RunConfig). One table drives both the parser
# and the mapping to the config; a flag's None means "not given" (config files and
# --paper then decide), so every default shown comes from RunConfig itself.
_RUN_FIELDS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("--model", "model", {}, "model alias, folder, .gguf or hub id (default {default})"),
    ("--limit", "limit", {"type": _positive}, "the first N SimpleQA rows (default {default})"),
    ("--ids", "ids", {"type": _ids}, "explicit SimpleQA row ids, comma separated"),
    ("--stratified", "stratified", {"type": _positive}, "N rows sampled per topic, seeded"),
    (
        "--methods",
        "methods",
        {"type": _methods},
        "comma separated: full, segmented, NAME=0-3,8-11 (default {default})",
    ),
    (
        "--trials",
        "n_trials",
        {"type": _positive},
        "Optuna trials per prompt and method (default {default}, the paper's)",
    ),
    (
        "--batch-trials",
        "batch_trials",
        {"type": _positive},
        "trials asked together per prompt (default {default})",
    ),
    (
        "--batch-rows",
        "batch_rows",
        {"type": _positive},
        "rows per steered generate call (default {default})",
    ),
    ("--sampler", "sampler", {"choices": SAMPLERS}, "Optuna sampler (default {default})"),
    (
        "--parametrization",
        "parametrization",
        {"choices": PARAMETRIZATIONS},
        "what the search varies, see docs/strength_study.md (default {default})",
    ),
    (
        "--start-trials",
        "start_trials",
        {"type": _non_negative},
        "log-spaced strengths tried first on every prompt (default {default})",
    ),
    (
        "--n-startup-trials",
        "n_startup_trials",
        {"type": _non_negative},
        "random trials before TPE/GP model the results (default {default})",
    ),
    (
        "--operator",
        "operator",
        {"choices": OPERATORS},
        "how a steered layer changes: fusion = eq. (5), see docs/operators.md (default {default})",
    ),
    (
        "--schedule",
        "schedule",
        {},
        "strength over decode steps: constant, prompt_only, first_n:N, decay:RHO, "
        "kl:EPS (cached mode only) (default {default})",
    ),
    (
        "--windows",
        "windows",
        {"action": "store_true"},
        "the search may switch each layer segment off",
    ),
    (
        "--mode",
        "mode",
        {"choices": MODES},
        "faithful = the published method, cached = faster approximation (default {default})",
    ),
    (
        "--max-new-tokens",
        "max_new_tokens",
        {"type": _positive},
        "tokens per generation (default {default})",
    ),
    (
        "--select",
        "select",
        {"choices": tuple(SELECTED_GRADES)},
        "which baseline grades are steered (default {default})",
    ),
    (
        "--score-on",
        "score_on",
        {"choices": ("full", "completion")},
        "score the decoded text with the echoed prompt, or the completion (default {default})",
    ),
    (
        "--baseline-prompt",
        "baseline_prompt",
        {"choices": ("qa", "bare")},
        "'Question: q\\nAnswer:' or the bare question (default {default})",
    ),
    (
        "--chat-template",
        "chat_template",
        {"action": "store_true"},
        "wrap prompts in the chat template",
    ),
    (
        "--judge",
        "judge",
        {},
        "local:MODEL, http:MODEL@BASE_URL or mistral (key from env); default: offline proxy",
    ),
    (
        "--judge-missing",
        "judge_missing",
        {"choices": ("zero", "exclude")},
        "a missing judge score in the composite (default {default}, the release's)",
    ),
    ("--ppl-model", "ppl_model", {}, "perplexity scorer (default: the base model; gpt2 = paper)"),
    ("--load-in-8bit", "load_in_8bit", {"action": "store_true"}, "8-bit weights (bitsandbytes)"),
    ("--dtype", "dtype", {}, "weight dtype (default {default})"),
    ("--device", "device", {}, "torch device (default {default})"),
    ("--seed", "seed", {"type": int}, "subset and search seed (default {default})"),
    (
        "--backend",
        "backend",
        {"choices": ("local", "serialised", "ndif")},
        "where traces run; ndif needs NDIF_API_KEY and --ppl-model (default {default})",
    ),
    (
        "--skip-bad-rows",
        "on_bad_rows",
        {"action": "store_const", "const": "skip"},
        "skip bad SimpleQA rows (default: stop)",
    ),
)


def _run_options(p: argparse.ArgumentParser) -> None:
    """``fsnn run``'s options: the config table, then the options of the invocation."""
    d = RunConfig().flat(all_search=True)
    for flag, name, kw, text in _RUN_FIELDS:
        shown = ",".join(d[name]) if isinstance(d.get(name), tuple) else d.get(name)
        p.add_argument(flag, dest=name, default=None, help=text.format(default=shown), **kw)
    p.add_argument(
        "--out", default="runs/default", help="run folder (rerun the same command to resume)"
    )
    p.add_argument(
        "--simpleqa-csv",
        default=None,
        help="SimpleQA CSV (default $FSNN_SIMPLEQA_CSV, else download)",
    )
    p.add_argument(
        "--force-new", action="store_true", help="start over a folder made with another config"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--config",
        metavar="TOML",
        default=None,
        help="run config file of RunConfig fields; flags override it (docs/inspect.md)",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="start from the paper's settings (fsnn.experiment.config_file.PAPER_PRESET); file and flags override",
    )


# --------------------------------------------------------------------------- handlers


def _ask(args: argparse.Namespace) -> int:
    from fsnn.models.load import load_model
    from fsnn.steering.generation import generate
    from fsnn.steering.prompts import apply_chat

    model = load_model(args.model, load_in_8bit=args.load_in_8bit)
    prompt = apply_chat(model.tokenizer, args.question) if args.chat_template else args.question
    out = generate(model, [prompt], max_new_tokens=args.max_new_tokens)[0]
    print(json.dumps({"text": out.completion, "ids": out.ids}) if args.json else out.completion)
    return 0


def _steer(args: argparse.Namespace) -> int:
    from fsnn.models.load import load_model
    from fsnn.steering.layout import parse_strengths
    from fsnn.steering.prompts import PAPER_TEMPLATES
    from fsnn.steering.references import ReferenceItem, capture_references
    from fsnn.steering.steer import Steering

    parse_strengths(args.strengths, 10**6)  # the text's shape, before the model loads
    model = load_model(args.model, load_in_8bit=args.load_in_8bit)
    strengths = parse_strengths(args.strengths, model.n_layers)
    item = ReferenceItem(question=args.question, answer=args.answer, explanation=args.explanation)
    steering = Steering(
        references=capture_references(model, [item]), strengths=strengths, mode=args.mode
    )
    out = steering.generate(
        model, [PAPER_TEMPLATES.steering_prompt(args.question)], max_new_tokens=args.max_new_tokens
    )[0]
    if args.json:
        print(
            json.dumps(
                {
                    "text": out.completion,
                    "ids": out.ids,
                    "full_text": out.text,
                    "mode": args.mode,
                    "strengths": strengths.params(),
                    "model": model.name,
                }
            )
        )
    else:
        print(out.completion)
    return 0


def _run(args: argparse.Namespace) -> int:
    from fsnn.analysis.summary import summary_table
    from fsnn.experiment.config_file import resolve_from_cli
    from fsnn.experiment.pipeline import run_pipeline

    flags = {name: getattr(args, name) for _, name, _, _ in _RUN_FIELDS}
    # precedence flags > --config file > --paper preset > RunConfig defaults; printed first
    config, header = resolve_from_cli(args.config, args.paper, flags)
    print(header)
    scale, pool = _scale_out(args)  # issue 24: --shard, --workers, --ray-address
    with pool:
        results = run_pipeline(
            config,
            args.out,
            simpleqa_csv=args.simpleqa_csv,
            force_new=args.force_new,
            progress=not args.no_progress,
            **scale,
        )
    print(summary_table(results))
    print(f"\nresults: {args.out}/results.nc (summary in {args.out}/summary.md)")
    return 0


def _judge_agreement(args: argparse.Namespace) -> int:
    from fsnn.analysis.judge_agreement import agreement_main, format_report, report_json

    from .judges import JudgeConfig

    overrides = {
        "api_key_env": args.api_key_env,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
    }
    if args.judge.partition(":")[0] == "offline":
        config: str | JudgeConfig = args.judge  # make_judge builds the offline judge
    else:
        config = JudgeConfig.from_spec(args.judge, **overrides)
    cache: str | None = None if args.no_cache else (args.cache or "default")
    report = agreement_main(
        config,
        release_dir=args.release_dir,
        limit=args.limit,
        seed=args.seed,
        out=args.out,
        cache=cache,
        progress=not (args.no_progress or args.json),
        split=args.split,
        n_boot=args.n_boot,
    )
    print(report_json(report) if args.json else format_report(report))
    return 0


def _import_release(args: argparse.Namespace) -> int:
    from fsnn.analysis.release import format_summary, import_release, write_release

    imported = import_release(args.release_dir, args.simpleqa_csv)
    paths = write_release(imported, args.out)
    print(format_summary(imported.results))
    if imported.subsets is None:
        print(
            "note: no SimpleQA CSV given (--simpleqa-csv / FSNN_SIMPLEQA_CSV): no topics, no subsets.nc"
        )
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _figures(args: argparse.Namespace) -> int:
    from fsnn.analysis.figures import render_all

    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    for path in render_all(args.run, args.out, formats, best_of_k=args.best_of_k):
        print(f"wrote {path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from fsnn.analysis.inspect import format_prompt, format_prompt_table
    from fsnn.store.files import open_run

    run = open_run(args.run, require=("results",))
    if args.prompt is None:
        print(format_prompt_table(run, args.method, width=args.width, limit=args.limit))
    else:
        print(format_prompt(run, args.prompt, args.method, width=args.width, diff=args.diff))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from fsnn.analysis.inspect import compare_runs, format_compare
    from fsnn.store.files import open_run

    comparison = compare_runs(
        [open_run(r, require=("results",)) for r in args.runs],
        allow_different=args.allow_different,
    )
    print(json.dumps(comparison, indent=2) if args.json else format_compare(comparison))
    return 0


def _report(args: argparse.Namespace) -> int:
    from fsnn.analysis.report import write_report

    path = write_report(args.run, args.out, examples=args.examples, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


# --------------------------------------------------------------------------- issue 24: scale out
# fsnn run --workers N [--ray-address ADDR] | --shard I/N, and fsnn merge (docs/scaling.md)


def _scale_out_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="run on N Ray workers, one model each (pip install 'fsnn[ray]'; docs/scaling.md)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --workers: join this Ray cluster (default: start one in this process)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only part I (0-based) of N of the selected questions; fsnn merge joins the parts",
    )


def _scale_out(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """run_pipeline's ``shard``/``pool`` arguments, and the pool's context (closed after the run)."""
    import contextlib

    from fsnn.experiment.shards import Shard

    if args.ray_address is not None and args.workers is None:
        raise FsnnError("--ray-address needs --workers N")
    scale: dict[str, Any] = {}
    if args.shard is not None:
        scale["shard"] = Shard.parse(args.shard)
    if args.workers is None:
        return scale, contextlib.nullcontext()
    from fsnn.experiment.workers import RayPool

    scale["pool"] = RayPool(args.workers, args.ray_address, progress=not args.no_progress)
    return scale, scale["pool"]


def _merge_parser(sub: Any) -> None:
    p = _add(
        sub,
        "merge",
        "join the folders of fsnn run --shard I/N into the folder one run would have made",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="every shard folder of the run")
    p.add_argument("--out", required=True, metavar="RUN", help="the merged run folder")
    p.add_argument(
        "--simpleqa-csv",
        default=None,
        metavar="PATH",
        help="only to name missing prompts by SimpleQA id (default $FSNN_SIMPLEQA_CSV)",
    )
    p.add_argument(
        "--force-new", action="store_true", help="start over an --out folder holding another run"
    )
    p.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    from fsnn.analysis.summary import summary_table
    from fsnn.experiment.shards import merge_runs
    from fsnn.store.files import open_run

    report = merge_runs(
        args.runs, args.out, simpleqa_csv=args.simpleqa_csv, force_new=args.force_new
    )
    if report.steered:
        print(summary_table(open_run(report.out, require=("results",)).require("results")))
    print(
        f"\nmerged {len(report.shards)} shard(s): {report.prompts} question(s), {report.steered} steered, "
        f"into {report.out}"
    )
    return 0


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except FsnnError as exc:
        print(f"fsnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fsnn: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

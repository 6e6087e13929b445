"""Core subcommands: ``ask`` (plain generation), ``steer`` (one steered answer) and ``run``
(the SimpleQA experiment, the main job)."""

from __future__ import annotations

import argparse
import json


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="answer one question with a model (no steering)")
    p.add_argument("question")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--chat-template", action="store_true", help="wrap the question in the model's chat template")
    p.add_argument("--load-in-8bit", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ask)

    p = sub.add_parser("steer", help="one Fusion-Steered answer (capture the reference, then steer)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--question", required=True)
    p.add_argument("--answer", required=True, help="ground truth that builds the reference (oracle setting)")
    p.add_argument("--explanation", default="", help="explanation appended to the answer in the reference")
    p.add_argument("--spec", default="full:0.5,0.5", help="full:ALPHA,GAMMA | seg:a1,a2,a3,g1,g2,g3 | NAME=0-3,8-11:a..,g..")
    p.add_argument("--mode", choices=("faithful", "cached"), default="faithful")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--load-in-8bit", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, ids, ...)")
    p.set_defaults(func=_steer)

    p = sub.add_parser("run", help="Fusion Steering on SimpleQA, resumable (the main job)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", default="runs/default", help="run folder (rerun the same command to resume)")
    p.add_argument("--simpleqa-csv", default=None, help="SimpleQA CSV (default $FSNN_SIMPLEQA_CSV, else download)")
    p.add_argument("--limit", type=int, default=None, help="first N SimpleQA rows (paper 500)")
    p.add_argument("--ids", default=None, help="explicit SimpleQA row ids, comma separated")
    p.add_argument("--stratified", type=int, default=None, help="N rows sampled per topic")
    p.add_argument("--methods", default=None, help="comma separated: full,segmented,NAME=0-3,8-11")
    p.add_argument("--trials", type=int, default=None, help="Optuna trials per prompt and method (paper 5)")
    p.add_argument("--batch-trials", type=int, default=None, help="trials asked together per prompt (K)")
    p.add_argument("--batch-rows", type=int, default=None, help="rows per steered generate call")
    p.add_argument("--sampler", choices=("tpe", "random"), default=None)
    p.add_argument("--parametrization", choices=("alpha_gamma", "product"), default=None)
    p.add_argument("--mode", choices=("faithful", "cached"), default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--select", choices=("incorrect", "not-correct"), default=None)
    p.add_argument("--score-on", choices=("full", "completion"), default=None)
    p.add_argument("--baseline-prompt", choices=("qa", "bare"), default=None)
    p.add_argument("--chat-template", action="store_true", default=None)
    p.add_argument("--judge", default=None, help="local:MODEL or http:MODEL@BASE_URL (key from env)")
    p.add_argument("--ppl-model", default=None, help="perplexity scorer (default: the base model; gpt2 = paper)")
    p.add_argument("--load-in-8bit", action="store_true", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--remote", action="store_true", default=None,
                   help="run the traces on NDIF (key from NDIF_API_KEY; needs --ppl-model)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip bad SimpleQA rows (default: stop)")
    p.add_argument("--force-new", action="store_true", help="start over a folder made with another config")
    p.set_defaults(func=_run)


def _ask(args: argparse.Namespace) -> int:
    from .generation import generate
    from .models import load_model
    from .prompts import apply_chat

    model = load_model(args.model, load_in_8bit=args.load_in_8bit)
    prompt = apply_chat(model.tokenizer, args.question) if args.chat_template else args.question
    out = generate(model, [prompt], max_new_tokens=args.max_new_tokens)[0]
    print(json.dumps({"text": out.completion, "ids": out.ids}) if args.json else out.completion)
    return 0


def _steer(args: argparse.Namespace) -> int:
    import torch

    from .models import load_model
    from .prompts import PAPER_TEMPLATES
    from .references import ReferenceItem, capture_references
    from .spec import parse_spec
    from .steer import steered_generate

    model = load_model(args.model, load_in_8bit=args.load_in_8bit)
    spec = parse_spec(args.spec, model.n_layers)
    item = ReferenceItem(question=args.question, answer=args.answer, explanation=args.explanation)
    h = torch.from_numpy(capture_references(model, [item]).values)
    alpha, gamma = spec.per_layer(model.n_layers)
    out = steered_generate(model, [PAPER_TEMPLATES.steering_prompt(args.question)], h, alpha[None], gamma[None],
                           mode=args.mode, max_new_tokens=args.max_new_tokens)[0]
    if args.json:
        print(json.dumps({"text": out.completion, "ids": out.ids, "full_text": out.text, "mode": args.mode,
                          "spec": spec.params(), "model": model.name}))
    else:
        print(out.completion)
    return 0


def _run(args: argparse.Namespace) -> int:
    from .pipeline import config_from_args, run_pipeline, summary_table

    ids = tuple(int(i) for i in args.ids.split(",")) if args.ids else None
    config = config_from_args(
        model=args.model, limit=args.limit, ids=ids, stratified=args.stratified,
        methods=tuple(m for m in args.methods.split(",") if m) if args.methods else None,
        n_trials=args.trials, batch_trials=args.batch_trials, batch_rows=args.batch_rows, sampler=args.sampler,
        parametrization=args.parametrization, mode=args.mode, max_new_tokens=args.max_new_tokens,
        select=args.select, score_on=args.score_on, baseline_prompt=args.baseline_prompt,
        chat_template=args.chat_template, judge=args.judge, ppl_model=args.ppl_model,
        load_in_8bit=args.load_in_8bit, dtype=args.dtype, device=args.device, seed=args.seed, remote=args.remote,
        on_bad_rows="skip" if args.skip_bad_rows else None,
    )
    results = run_pipeline(config, args.out, simpleqa_csv=args.simpleqa_csv, force_new=args.force_new)
    print(summary_table(results))
    print(f"\nresults: {args.out}/results.nc (summary in {args.out}/summary.md)")
    return 0

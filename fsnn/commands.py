"""Core subcommands: ``ask`` (plain generation, a smoke test of a model)."""

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


def _ask(args: argparse.Namespace) -> int:
    from .generation import generate
    from .models import load_model

    model = load_model(args.model, load_in_8bit=args.load_in_8bit)
    prompt = args.question
    if args.chat_template:
        prompt = model.tokenizer.apply_chat_template(
            [{"role": "user", "content": args.question}], tokenize=False, add_generation_prompt=True
        )
    out = generate(model, [prompt], max_new_tokens=args.max_new_tokens)[0]
    if args.json:
        print(json.dumps({"text": out.completion, "ids": out.ids}))
    else:
        print(out.completion)
    return 0

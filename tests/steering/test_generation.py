"""fsnn.steering.generation: batched greedy generation equals one prompt at a time."""

from __future__ import annotations

import pytest

from fsnn.errors import FsnnError
from fsnn.steering.generation import generate

PROMPTS = ["The capital of France is", "Once upon a time there was a", "1, 2, 3,", "Hello"]


def test_batched_equals_one_by_one(tiny_gemma2):
    model = tiny_gemma2
    prompts = PROMPTS[:3]  # different lengths: left padding in the batch
    batched = generate(model, prompts, max_new_tokens=5, batch_size=3)
    alone = [generate(model, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert [o.ids for o in batched] == [o.ids for o in alone]
    assert batched == alone  # completions, texts, stop flags: the same records
    assert [o.prompt for o in batched] == prompts


def test_stop_at_eos_false_gives_exactly_max_new_tokens(tiny_gemma2):
    out = generate(tiny_gemma2, PROMPTS[:2], max_new_tokens=5, stop_at_eos=False)
    assert [len(o.ids) for o in out] == [5, 5] and not any(o.stopped for o in out)


def test_generation_is_greedy_argmax(tiny_gemma2):
    import torch

    model = tiny_gemma2
    (out,) = generate(model, [PROMPTS[0]], max_new_tokens=3, stop_at_eos=False)
    ids = model.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    want = []
    with torch.no_grad():
        for _ in range(3):
            nxt = int(model.hf_model(input_ids=ids).logits[0, -1].argmax())
            want.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert out.ids == want


def test_max_new_tokens_must_be_positive(tiny_gemma2):
    with pytest.raises(FsnnError, match="max_new_tokens must be >= 1"):
        generate(tiny_gemma2, PROMPTS, max_new_tokens=0)

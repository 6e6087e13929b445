"""fsnn.steering.decode: encoding, the EOS set, cutting rows at EOS, the greedy config."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.steering.decode import decode_rows, encode, eos_ids, greedy_config


def test_encode_left_pads_and_checks_the_context(tiny_gemma2):
    model = tiny_gemma2
    enc = encode(model, ["Hi", "A much longer prompt than that"], max_new_tokens=4)
    mask = enc.attention_mask
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()  # left padding
    assert enc.input_ids.shape == mask.shape
    with pytest.raises(FsnnError, match="no prompt"):
        encode(model, [])
    n = int(mask[1].sum())
    limit = model.max_length
    encode(
        model, ["Hi", "A much longer prompt than that"], max_new_tokens=limit - n
    )  # fits exactly
    with pytest.raises(
        FsnnError, match=rf"prompt 1 is {n} tokens; with {limit - n + 1} new tokens it exceeds"
    ):
        encode(model, ["Hi", "A much longer prompt than that"], max_new_tokens=limit - n + 1)


def test_eos_ids_join_tokenizer_and_generation_config(tiny_gemma2):
    model = tiny_gemma2
    gen = model.hf_model.generation_config
    old = gen.eos_token_id
    try:
        gen.eos_token_id = [5, 7]
        assert eos_ids(model) == {int(model.tokenizer.eos_token_id), 5, 7}
        gen.eos_token_id = 9
        assert eos_ids(model) == {int(model.tokenizer.eos_token_id), 9}
    finally:
        gen.eos_token_id = old


def test_decode_rows_cuts_at_the_first_eos(tiny_gemma2):
    model = tiny_gemma2
    tok = model.tokenizer
    prompts = ["Hi", "Say it"]
    enc = encode(model, prompts)
    word = tok(" yes", add_special_tokens=False).input_ids
    eos = 999_999
    new = torch.tensor([[*word, eos, *word], [*word, *word, *word]])
    rows = decode_rows(model, prompts, enc, torch.cat([enc.input_ids, new], dim=1), {eos})
    assert rows[0].ids == word and rows[0].stopped and rows[0].completion == tok.decode(word)
    assert rows[1].ids == word * 3 and not rows[1].stopped
    assert rows[0].prompt == "Hi" and rows[0].text == tok.decode(
        enc.input_ids[0][enc.attention_mask[0].bool()].tolist() + word, skip_special_tokens=True
    )


def test_greedy_config_is_plain_greedy(tiny_gemma2):
    model = tiny_gemma2
    cfg = greedy_config(model, 7, use_cache=False, eos={3, 1})
    assert (cfg.max_new_tokens, cfg.do_sample, cfg.num_beams, cfg.use_cache) == (7, False, 1, False)
    assert cfg.eos_token_id == [1, 3] and cfg.pad_token_id == model.tokenizer.pad_token_id
    # no EOS at all: an id the model cannot emit, so transformers cannot fill one in
    assert greedy_config(model, 7, use_cache=True, eos=set()).eos_token_id == [
        model.hf_model.config.vocab_size
    ]

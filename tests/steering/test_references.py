"""fsnn.steering.references: eq. (1) capture equals a hand computation on a tiny model."""

from __future__ import annotations

import pytest
import torch

from fsnn.errors import FsnnError
from fsnn.steering.references import ReferenceItem, capture_references

ITEMS = [
    ReferenceItem(
        question="Who painted the Mona Lisa?",
        answer="Leonardo da Vinci",
        explanation="He painted it in Florence.",
    ),
    ReferenceItem(question="What is 2 + 2?", answer="4"),  # shorter: left padding in the batch
]


def hand_reference(model, item: ReferenceItem) -> tuple[torch.Tensor, int]:
    """h_l = mean of block l's output over the tokens lying inside "{answer}\\n{explanation}"."""
    header = f"Question: {item.question}\nAnswer and explanation:\n"
    text = header + f"{item.answer}\n{item.explanation}"
    enc = model.tokenizer(text, return_offsets_mapping=True)
    inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s >= len(header) and e > s]
    outputs = {}
    hooks = [
        model.hf_layer(li).register_forward_hook(
            lambda m, a, out, li=li: outputs.__setitem__(
                li, out[0] if isinstance(out, tuple) else out
            )
        )
        for li in range(model.n_layers)
    ]
    try:
        with torch.no_grad():
            model.hf_model(input_ids=torch.tensor([enc["input_ids"]]))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([outputs[li][0, inside].mean(0) for li in range(model.n_layers)]), len(
        inside
    )


def test_capture_equals_the_hand_computation(tiny_gemma2):
    model = tiny_gemma2
    h = capture_references(model, ITEMS, batch_size=2)
    assert h.dims == ("prompt", "layer", "hidden") and h.shape == (2, model.n_layers, model.d_model)
    assert str(h.dtype) == "float32"
    for i, item in enumerate(ITEMS):
        want, n_span = hand_reference(model, item)
        torch.testing.assert_close(
            torch.from_numpy(h.values[i]), want.float(), rtol=1e-5, atol=1e-5
        )
        assert int(h["span_length"].values[i]) == n_span > 0
        assert h["reference_text"].values[i].endswith(f"{item.answer}\n{item.explanation}")


def test_no_items_is_an_error(tiny_gemma2):
    with pytest.raises(FsnnError, match="no prompt"):
        capture_references(tiny_gemma2, [])

"""The four prompt templates of docs/method.md §4.1, named and overridable.

The paper used plain text with the tokenizer's BOS, no chat template. ``{q}`` is the
question, ``{gt}`` the ground-truth answer, ``{exp}`` the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXPLANATION_MARKER", "PAPER_TEMPLATES", "Templates", "apply_chat", "split_explanation"]


@dataclass(frozen=True, kw_only=True)
class Templates:
    """Prompt templates, one per stage.

    Attributes:
        baseline: stage 1, the unsteered answer (the release's outputs suggest the bare
            question ``{q}`` was used; ``Question: {q}\\nAnswer:`` is the documented one).
        enrichment: stage 3, asks for an explanation of the known answer.
        reference_header: stage 4, the part of the reference text before the answer;
            the averaged span is everything after it (``{gt}\\n{exp}``).
        steering: stage 5, the prompt that steered generation continues.
        use_chat_template: wrap each prompt as one user turn of the tokenizer's chat
            template (off in the paper).
    """

    baseline: str = "Question: {q}\nAnswer:"
    enrichment: str = "Question: {q}\nAnswer: {gt}"
    reference_header: str = "Question: {q}\nAnswer and explanation:\n"
    reference_body: str = "{gt}\n{exp}"
    steering: str = "Question: {q}\nAnswer and explanation:"
    use_chat_template: bool = False

    def __post_init__(self) -> None:
        for name in ("baseline", "enrichment", "reference_header", "steering"):
            if "{q}" not in getattr(self, name):
                raise ValueError(f"template {name!r} must contain {{q}}")
        if "{gt}" not in self.reference_body:
            raise ValueError("template 'reference_body' must contain {gt}")

    def baseline_prompt(self, q: str) -> str:
        return self.baseline.format(q=q)

    def enrichment_prompt(self, q: str, gt: str) -> str:
        return self.enrichment.format(q=q, gt=gt)

    def reference_parts(self, q: str, gt: str, exp: str) -> tuple[str, str]:
        """(header, body) of the reference text; the body's tokens are averaged."""
        return self.reference_header.format(q=q), self.reference_body.format(gt=gt, exp=exp)

    def steering_prompt(self, q: str) -> str:
        return self.steering.format(q=q)


PAPER_TEMPLATES = Templates()

EXPLANATION_MARKER = "**Explanation:**"


def split_explanation(continuation: str, marker: str = EXPLANATION_MARKER) -> str:
    """The explanation in an enrichment continuation (docs/method.md §2.3, parity rule).

    The text after the first literal ``**Explanation:**``, stripped; empty when the
    marker is absent (134 of 260 prompts in the release).
    """
    _, found, after = continuation.partition(marker)
    return after.strip() if found else ""


def apply_chat(tokenizer, text: str) -> str:
    """``text`` as one user turn of the tokenizer's chat template, ready for generation."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )

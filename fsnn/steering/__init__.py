"""Steering: the intervention itself, from reference capture to steered text.

- :mod:`.fusion`: eqs. (1)-(5) of docs/method.md §3 as pure tensor functions.
- :mod:`.layout`: which layers are steered, grouped in segments sharing a strength.
- :mod:`.strength`: what a search samples and the per-layer (alpha, gamma) it means.
- :mod:`.references`: eq. (1), the reference activations of every layer in one pass.
- :mod:`.intervention`: the loop body that writes eq. (5) inside an nnsight trace.
- :mod:`.steer`: the :class:`Steering` value (references + layout + strengths + mode).
- :mod:`.generation`, :mod:`.decode`: plain batched generation and the shared output record.
- :mod:`.prompts`: the prompt templates of docs/method.md §4.1.

May import: :mod:`fsnn.errors`, :mod:`fsnn.models`, :mod:`fsnn.backends`.
"""

"""fsnn — Fusion Steering (arXiv:2505.22572) with nnsight.

Prompt-specific activation steering: reference activations captured from a text holding
the ground-truth answer and an explanation are fused into every decoder layer, with
strengths searched per prompt by Optuna. An oracle, upper-bound setting: the reference
uses the ground truth. See README.md and docs/.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

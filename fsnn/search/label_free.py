"""Label-free Fusion Steering (issue 14): references and strengths that need no answer.

The published method is an oracle (docs/method.md §1): the ground truth builds the
reference. This module holds the pieces that replace it at inference time, each fed
only the question (and a TRAIN split whose answers are known):

- :func:`question_activations`: mean residual per layer over the question prompt, one
  traced pass (the predictor's input and the retrieval key), (prompt, layer, hidden).
- :class:`Ridge` / :func:`fit_ridge` / :func:`choose_lambda`: closed-form ridge regression
  (dual form, since examples << features) from question activations to the oracle shift
  ``h_oracle - question_activation`` per layer; lambda by K-fold CV on train only.
- :func:`nearest`: retrieval control, the most cosine-similar training question.
- :func:`sample_answers` / :func:`majority_answer`: self-consistency, N seeded
  temperature samples and their normalised majority vote.
- :func:`fixed_strengths`: one strength k = alpha * gamma per segment, the median of
  the best trials of train oracle searches.
- :func:`dola_generate`: DoLa decoding (Chuang et al. 2024) read from nnsight traces:
  final-layer log-probs minus an early layer's (read through the final norm and the
  lm_head), restricted to the adaptive plausibility set; greedy.
- :func:`few_shot_prompt`, :data:`STEP_BY_STEP`: the prompting baselines.
- :class:`Seen`: a record of the texts each label-free stage was fed (the leak audit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fsnn.errors import FsnnError
from fsnn.judges.normalise import normalise_answer

__all__ = [
    "STEP_BY_STEP",
    "Ridge",
    "Seen",
    "answer_line",
    "choose_lambda",
    "dola_generate",
    "few_shot_prompt",
    "fit_ridge",
    "fixed_strengths",
    "majority_answer",
    "nearest",
    "question_activations",
    "sample_answers",
]

STEP_BY_STEP = "Question: {q}\nLet's think step by step, then give the answer.\nAnswer:"
FEW_SHOT_ITEM = "Question: {q}\nAnswer: {a}\n\n"


# --------------------------------------------------------------------------- leak audit


@dataclass
class Seen:
    """Texts and question ids each label-free stage was fed, by stage name.

    The leak test plants unique answers on the test side and asserts none of them
    appears in what a stage saw; nothing here changes a result.
    """

    texts: dict[str, list[str]] = field(default_factory=dict)
    ids: dict[str, set[int]] = field(default_factory=dict)

    def record(self, stage: str, texts: Sequence[str] = (), ids: Sequence[int] = ()) -> None:
        self.texts.setdefault(stage, []).extend(str(t) for t in texts)
        self.ids.setdefault(stage, set()).update(int(i) for i in ids)


# --------------------------------------------------------------------------- activations


@torch.no_grad()
def question_activations(model: Any, prompts: Sequence[str], *, batch_size: int = 8) -> np.ndarray:
    """Mean block output per layer over each prompt's tokens (padding excluded).

    Returns:
        float32 array (prompt, layer, hidden).
    """
    import nnsight

    from fsnn.models.layers import residual
    from fsnn.steering.decode import encode
    from fsnn.steering.fusion import masked_sum

    if not prompts:
        raise FsnnError("no prompt to read activations of")
    envoys = [model.layer(li) for li in range(model.n_layers)]
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = encode(model, list(prompts[start : start + batch_size]))
        mask = enc.attention_mask.to(model.device)
        with model.lm.trace({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}):
            means = nnsight.save([])
            for envoy in envoys:
                total, count = masked_sum(residual(envoy.output), mask)
                means.append((total / count).cpu())
        out.append(torch.stack(list(means), dim=1))
    return torch.cat(out).float().numpy()


# --------------------------------------------------------------------------- ridge


@dataclass(frozen=True, kw_only=True)
class Ridge:
    """y = (x - x_mean) @ weight + y_mean, fitted in closed form, kept in dual form.

    weight = x_centred.T @ dual is (features, targets): 17280 x 17280 for SmolLM2's
    30 layers x 576, too big to hold, so predictions go through the n training rows.

    Attributes:
        x_mean: (features,); y_mean: (targets,); x_centred: (n, features) training
        inputs; dual: (n, targets) dual coefficients; lam: lambda.
    """

    x_mean: np.ndarray
    y_mean: np.ndarray
    x_centred: np.ndarray
    dual: np.ndarray
    lam: float

    @property
    def weight(self) -> np.ndarray:
        """The primal weight (features, targets); small problems (tests) only."""
        return self.x_centred.T @ self.dual

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(m, features) -> (m, targets)."""
        kernel = (np.asarray(x, np.float64) - self.x_mean) @ self.x_centred.T
        return kernel @ self.dual + self.y_mean


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> Ridge:
    """argmin_W ||Xc W - Yc||^2 + lam ||W||^2 with centred X, Y (intercept unpenalised).

    Dual form W = Xc^T (Xc Xc^T + lam I)^-1 Yc: an n x n solve, n examples << features.

    Args:
        x: (n, features); y: (n, targets); lam: > 0.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise FsnnError(
            f"ridge needs x (n, f) and y (n, t) with the same n, got {x.shape} and {y.shape}"
        )
    if not lam > 0:
        raise FsnnError(f"ridge lambda must be > 0, got {lam}")
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    dual = np.linalg.solve(xc @ xc.T + lam * np.eye(len(x)), yc)
    return Ridge(x_mean=x_mean, y_mean=y_mean, x_centred=xc, dual=dual, lam=float(lam))


def choose_lambda(
    x: np.ndarray, y: np.ndarray, lambdas: Sequence[float], *, folds: int = 5, seed: int = 0
) -> tuple[float, dict[float, float]]:
    """Lambda with the lowest K-fold mean squared error (on the data given: train only).

    Lambdas are scaled by the trace of the centred Gram matrix / n, so the grid is
    unit-free. Returns (best absolute lambda, {relative lambda: CV MSE}).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    if n < 3:
        raise FsnnError(f"lambda CV needs at least 3 training examples, got {n}")
    folds = min(folds, n)
    scale = float(np.trace((x - x.mean(0)) @ (x - x.mean(0)).T)) / n or 1.0
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    errors: dict[float, float] = {}
    for rel in lambdas:
        sq = []
        for part in parts:
            train = np.setdiff1d(order, part)
            model = fit_ridge(x[train], y[train], rel * scale)
            sq.append(((model.predict(x[part]) - y[part]) ** 2).mean())
        errors[float(rel)] = float(np.mean(sq))
    best = min(errors, key=errors.__getitem__)
    return best * scale, errors


# --------------------------------------------------------------------------- retrieval


def nearest(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the most cosine-similar row of ``keys`` (n, f) for each query (m, f)."""
    keys, queries = np.asarray(keys, np.float64), np.asarray(queries, np.float64)
    kn = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    qn = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return np.argmax(qn @ kn.T, axis=1)


# --------------------------------------------------------------------------- self-consistency


def answer_line(completion: str, max_words: int = 12) -> str:
    """The answer part of a completion: its first non-empty line, at most ``max_words``."""
    for line in completion.splitlines():
        line = line.strip()
        if line:
            return " ".join(line.split()[:max_words])
    return ""


def majority_answer(answers: Sequence[str]) -> str:
    """The most frequent answer after normalisation (case, punctuation, articles:
    :func:`fsnn.judges.scoring.normalise_answer`); ties go to the earliest sample; empty
    answers never win unless all are empty."""
    keys = [normalise_answer(a) for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return ""
    top = max(counts.values())
    for answer, key in zip(answers, keys, strict=True):
        if key and counts[key] == top:
            return answer.strip()
    return ""  # pragma: no cover


@torch.no_grad()
def sample_answers(
    model: Any,
    prompts: Sequence[str],
    *,
    n_samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 8,
) -> list[list[str]]:
    """``n_samples`` temperature samples per prompt (completions), seeded per batch."""
    from fsnn.steering.decode import decode_rows, encode, eos_ids

    if n_samples < 1 or not temperature > 0:
        raise FsnnError(
            f"self-consistency needs n_samples >= 1 and temperature > 0, got {n_samples}, {temperature}"
        )
    eos = eos_ids(model)
    result: list[list[str]] = [[] for _ in prompts]
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = encode(model, chunk, max_new_tokens)
        for s in range(n_samples):
            torch.manual_seed(seed * 100003 + start * 101 + s)
            seqs = model.hf_model.generate(
                input_ids=enc.input_ids.to(model.device),
                attention_mask=enc.attention_mask.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                pad_token_id=model.tokenizer.pad_token_id,
            )
            for i, out in enumerate(decode_rows(model, chunk, enc, seqs.cpu(), eos)):
                result[start + i].append(out.completion)
    return result


# --------------------------------------------------------------------------- strengths


def fixed_strengths(
    best_alpha: np.ndarray, best_gamma: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """One strength per segment: the median over prompts of the best trial's k = alpha * gamma.

    Only the product moves a layer (eqs. (3)-(5), docs/method.md §3), so the median is
    taken of k, not of alpha and gamma apart (their medians' product is not the median
    product); the result is (alpha = 1, gamma = k) per segment, which steers exactly as
    any (alpha, gamma) of that product. Works for every parametrization whose trials
    have one (alpha, gamma) per segment: ``alpha_gamma``, ``log_product`` (alpha = 1,
    gamma = k already), ``product``.

    Args:
        best_alpha, best_gamma: (prompt, segment) of the TRAIN searches' best trials
            (rows of NaN, a prompt without a finished trial, are skipped).

    Returns:
        (alpha per segment, all 1.0), (gamma = median k per segment).
    """
    a, g = np.asarray(best_alpha, np.float64), np.asarray(best_gamma, np.float64)
    if a.shape != g.shape or a.ndim != 2:
        raise FsnnError(
            f"best alpha and gamma must both be (prompt, segment), got {a.shape} and {g.shape}"
        )
    ok = np.isfinite(a).all(1) & np.isfinite(g).all(1)
    if not ok.any():
        raise FsnnError("no train search finished a trial: no strength to fix")
    k = np.median(a[ok] * g[ok], 0)
    return tuple(1.0 for _ in k), tuple(float(v) for v in k)


# --------------------------------------------------------------------------- prompting


def few_shot_prompt(examples: Sequence[tuple[str, str]], question: str) -> str:
    """``Question/Answer`` pairs (TRAIN split) followed by the question to answer."""
    shots = "".join(FEW_SHOT_ITEM.format(q=q, a=a) for q, a in examples)
    return shots + f"Question: {question}\nAnswer:"


# --------------------------------------------------------------------------- DoLa


def _final_norm(model: Any) -> torch.nn.Module:
    hf = model.hf_model
    for path in (
        "model.norm",
        "model.final_layernorm",
        "transformer.ln_f",
        "model.language_model.norm",
    ):
        obj: Any = hf
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise FsnnError(f"DoLa: cannot find the final norm of model {model.name}")


def dola_pick(final_logp: torch.Tensor, early_logp: torch.Tensor, alpha: float) -> torch.Tensor:
    """DoLa's next token: argmax of (final - early) log-probs over the plausible set
    {v: p_final(v) >= alpha * max p_final}; ties broken by the final log-prob, so equal
    layers (a zero contrast) give exactly the greedy token.

    Args:
        final_logp, early_logp: (B, vocab) log-softmax. Returns (B,) token ids.
    """
    plausible = final_logp >= final_logp.max(-1, keepdim=True).values + float(np.log(alpha))
    contrast = torch.where(
        plausible, final_logp - early_logp, torch.full_like(final_logp, -torch.inf)
    )
    top = contrast == contrast.max(-1, keepdim=True).values
    return torch.where(top, final_logp, torch.full_like(final_logp, -torch.inf)).argmax(-1)


@torch.no_grad()
def dola_generate(
    model: Any,
    prompts: Sequence[str],
    *,
    early_layer: int,
    max_new_tokens: int,
    alpha: float = 0.1,
    batch_size: int = 8,
) -> list[Any]:
    """DoLa decoding, each step one nnsight trace of the whole sequence (no cache).

    The trace saves the last position's final logits (the lm_head output) and the early
    layer's block output; the early output goes through the final norm and the lm_head
    (the early-exit read-out). ``early_layer == n_layers - 1`` uses the final logits
    themselves, which reduces DoLa to greedy decoding exactly.

    Returns:
        One :class:`fsnn.steering.decode.GenerationOutput` per prompt.
    """
    from fsnn.steering.decode import decode_rows, encode, eos_ids

    if not 0 <= early_layer < model.n_layers:
        raise FsnnError(f"DoLa early layer {early_layer} is outside 0..{model.n_layers - 1}")
    if not 0 < alpha < 1:
        raise FsnnError(f"DoLa plausibility alpha must be in (0, 1), got {alpha}")
    norm, head = _final_norm(model), model.hf_model.get_output_embeddings()
    same = early_layer == model.n_layers - 1
    eos = eos_ids(model)
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = encode(model, chunk, max_new_tokens)
        ids, mask = enc.input_ids, enc.attention_mask
        done = torch.zeros(len(chunk), dtype=torch.bool)
        pad = model.tokenizer.pad_token_id
        for _ in range(max_new_tokens):
            with model.lm.trace({"input_ids": ids, "attention_mask": mask}):
                # modules in forward order: the early block before the lm_head
                early_h = None if same else residual_last(model.layer(early_layer).output).save()
                final = model.lm.lm_head.output[:, -1].save()
            final_logp = torch.log_softmax(final.float().cpu(), -1)
            if same:
                early_logp = final_logp
            else:
                assert early_h is not None  # saved in the trace unless `same`
                early_logits = head(norm(early_h.to(model.device))).float().cpu()
                early_logp = torch.log_softmax(early_logits, -1)
            nxt = dola_pick(final_logp, early_logp, alpha)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            done |= torch.tensor([int(t) in eos for t in nxt.tolist()])
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones(len(chunk), 1, dtype=mask.dtype)], 1)
            if bool(done.all()):
                break
        outputs.extend(decode_rows(model, chunk, enc, ids, eos))
    return outputs


def residual_last(output: Any) -> Any:
    """The last position of a block output (the residual stream tensor), (B, H)."""
    from fsnn.models.layers import residual

    return residual(output)[:, -1]

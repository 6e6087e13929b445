"""The offline judge's model: a proportional-odds (ordinal logistic) model over the
features, and its fitted calibration shipped as JSON (``calibration/offline-v1.json`` in
this folder: feature list, standardisation, coefficients, cut points, the train prompt ids).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fsnn.errors import FsnnError

from .features import FEATURES

__all__ = [
    "CALIBRATION_FILE",
    "DECODES",
    "Calibration",
    "decode_grades",
    "load_calibration",
    "median_grade",
    "ordinal_probs",
]

CALIBRATION_FILE = "offline-v1.json"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def ordinal_probs(z: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Proportional-odds class probabilities.

    P(grade <= k) = sigmoid(cut_k - z) for k = 1..K-1.

    Args:
        z: linear scores, shape (item,).
        cuts: increasing cut points, shape (K-1,).

    Returns:
        shape (item, K), rows summing to 1.
    """
    cdf = _sigmoid(cuts[None, :] - z[:, None])
    cdf = np.concatenate([np.zeros((len(z), 1)), cdf, np.ones((len(z), 1))], axis=1)
    return np.clip(np.diff(cdf, axis=1), 1e-12, 1.0)


DECODES = ("median", "expected")


def decode_grades(probs: np.ndarray, rule: str) -> np.ndarray:
    """One grade per row of ``probs`` (shape (item, 5)): ``median`` (see
    :func:`median_grade`) or ``expected`` (E[grade] rounded half up)."""
    if rule == "median":
        return median_grade(probs)
    if rule == "expected":
        return np.floor(probs @ np.arange(1, probs.shape[1] + 1) + 0.5).astype(int)
    raise FsnnError(f"unknown decode rule {rule!r}; use one of {DECODES}")


def median_grade(probs: np.ndarray) -> np.ndarray:
    """Largest grade k with P(grade >= k) >= 1/2, shape (item,)."""
    tail = np.cumsum(probs[:, ::-1], axis=1)[:, ::-1]  # tail[:, k-1] = P(grade >= k)
    return (tail >= 0.5).sum(axis=1).clip(1, probs.shape[1])


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """A fitted offline judge: what the JSON file holds.

    Attributes:
        version: e.g. ``"v1"``; the judge id is ``offline-<version>``.
        features: feature names, in the order of ``mean``, ``scale`` and ``coef``.
        mean: feature means on the train rows, shape (feature,).
        scale: feature standard deviations (1 where constant), shape (feature,).
        coef: ordinal-model coefficients of the standardised features, shape (feature,).
        cuts: the 4 increasing cut points.
        l2: the ridge penalty chosen by cross-validation on train prompts.
        decode: how a distribution becomes one grade (:data:`DECODES`), chosen by
            cross-validation on train prompts (composite accuracy error).
        simpleqa_correct: P(grade >= JUDGE_THRESHOLD) at or above which the SimpleQA
            letter is CORRECT.
        train_prompts: release prompt ids (0..259) whose rows were fitted.
        split: how the train prompts were drawn (seed, rule).
        info: anything else the fit recorded (CV results, counts, date).
    """

    version: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    cuts: tuple[float, ...]
    l2: float
    simpleqa_correct: float
    train_prompts: tuple[int, ...]
    decode: str = "median"
    split: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"v\d+[\w.-]*", self.version):
            raise FsnnError(f"offline calibration: bad version {self.version!r}")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise FsnnError(f"offline calibration: unknown feature(s) {unknown}")
        k = len(self.features)
        for name in ("mean", "scale", "coef"):
            if len(getattr(self, name)) != k:
                raise FsnnError(f"offline calibration: {name} has not {k} values")
        if len(self.cuts) != 4 or any(
            b <= a for a, b in zip(self.cuts, self.cuts[1:], strict=False)
        ):
            raise FsnnError("offline calibration: cuts must be 4 increasing values")
        if any(s <= 0 for s in self.scale):
            raise FsnnError("offline calibration: scale must be > 0")
        if self.decode not in DECODES:
            raise FsnnError(f"offline calibration: decode must be one of {DECODES}")
        if not 0 < self.simpleqa_correct < 1:
            raise FsnnError("offline calibration: simpleqa_correct must be in (0, 1)")

    @property
    def judge_id(self) -> str:
        return f"offline-{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("features", "mean", "scale", "coef", "cuts", "train_prompts"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        try:
            return cls(
                version=str(d["version"]),
                features=tuple(str(f) for f in d["features"]),
                mean=tuple(float(v) for v in d["mean"]),
                scale=tuple(float(v) for v in d["scale"]),
                coef=tuple(float(v) for v in d["coef"]),
                cuts=tuple(float(v) for v in d["cuts"]),
                l2=float(d["l2"]),
                simpleqa_correct=float(d["simpleqa_correct"]),
                train_prompts=tuple(int(v) for v in d["train_prompts"]),
                decode=str(d.get("decode", "median")),
                split=dict(d.get("split", {})),
                info=dict(d.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FsnnError(f"offline calibration: bad or missing field ({exc})") from None

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically."""
        from fsnn.store.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    def _columns(self) -> list[int]:
        return [FEATURES.index(f) for f in self.features]

    def probs(self, x_all: np.ndarray) -> np.ndarray:
        """Grade distribution from a :func:`feature_matrix`, shape (item, 5)."""
        x = (x_all[:, self._columns()] - np.asarray(self.mean)) / np.asarray(self.scale)
        return ordinal_probs(x @ np.asarray(self.coef), np.asarray(self.cuts))


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The shipped calibration (``fsnn/judges/offline/calibration/offline-v1.json``) or ``path``."""
    try:
        if path is None:
            text = (
                resources.files(__package__).joinpath("calibration", CALIBRATION_FILE).read_text()
            )
            where = f"fsnn/judges/offline/calibration/{CALIBRATION_FILE}"
        else:
            text = Path(path).read_text()
            where = str(path)
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise FsnnError(
            f"cannot read the offline calibration {path or CALIBRATION_FILE}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise FsnnError(f"{where}: not a JSON object")
    return Calibration.from_dict(data)

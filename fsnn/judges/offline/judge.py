"""The offline judge itself: features -> calibrated grade distribution -> 1-5 grade and
SimpleQA letter (the rules are in the package docstring, :mod:`fsnn.judges.offline`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsnn.judges.base import Grade, Judge
from fsnn.judges.scoring import JUDGE_THRESHOLD, SIMPLEQA_GRADES

from .features import FEATURES, _to_text, features
from .model import Calibration, decode_grades, load_calibration

__all__ = ["OfflineConfig", "OfflineJudge"]


@dataclass(frozen=True, kw_only=True)
class OfflineConfig:
    """Settings of the offline judge (recorded in reports).

    Attributes:
        calibration: path of a calibration JSON, or None for the shipped one.
    """

    calibration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "offline", **asdict(self)}


class OfflineJudge(Judge):
    """The offline judge: a :class:`fsnn.judges.base.Judge` that grades items itself, no
    key, no network.

    Deterministic and fast (milliseconds per item), so it keeps no answer cache.

    Attributes:
        calibration: the fitted model.
        config: its :class:`OfflineConfig`.
        id: ``offline-<version>``, recorded in every grade.
        stats: ``answered``, ``failed`` and ``seconds`` since the judge was made.
    """

    def __init__(self, calibration: Calibration | str | Path | None = None) -> None:
        if isinstance(calibration, Calibration):
            config = OfflineConfig()
        else:
            config = OfflineConfig(calibration=None if calibration is None else str(calibration))
            calibration = load_calibration(calibration)
        super().__init__(config, cache=None, judge_id=calibration.judge_id)
        self.calibration = calibration

    def _score(
        self, items: Sequence[tuple[Any, Any, Any]]
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        start = time.perf_counter()
        rows, reasons = [], []
        for it in items:
            if not isinstance(it, tuple | list) or len(it) != 3:
                rows.append(None)
                reasons.append(["item is not a (question, gold, answer) triple"])
                continue
            f, why = features(*it)
            _, _, p = it
            text, _ = _to_text(p)
            if not text.strip():
                why.append("empty answer")
            rows.append(list(f.values()))
            reasons.append(why)
        x = np.array([r if r is not None else [0.0] * len(FEATURES) for r in rows], dtype=float)
        x = x.reshape(len(items), len(FEATURES))
        probs = self.calibration.probs(x)
        for i, why in enumerate(reasons):
            if rows[i] is None or "empty answer" in why:
                probs[i] = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
        self.stats["answered"] += len(items)
        self.stats["seconds"] += time.perf_counter() - start
        return x, probs, reasons

    def grade_quality(self, items: Sequence[tuple[Any, Any, Any]]) -> list[Grade]:
        """1-5 grades (the median of the calibrated distribution) of ``items``."""
        _, probs, reasons = self._score(items)
        grades = decode_grades(probs, self.calibration.decode)
        return [
            Grade(
                task="quality",
                value=int(g),
                raw=f"Score: {int(g)}",
                judge_id=self.id,
                notes="; ".join(f"reason: {r}" for r in why),
                probs={str(k + 1): float(v) for k, v in enumerate(p)},
            )
            for g, p, why in zip(grades, probs, reasons, strict=True)
        ]

    def grade_simpleqa(self, items: Sequence[tuple[Any, Any, Any]]) -> list[Grade]:
        """SimpleQA letters from the same fit (see the module docstring)."""
        x, probs, reasons = self._score(items)
        p_good = probs[:, JUDGE_THRESHOLD - 1 :].sum(axis=1)
        refusal = x[:, FEATURES.index("refusal")] > 0
        match = x[:, FEATURES.index("match_any")] > 0
        out = []
        for i, why in enumerate(reasons):
            blank = "empty answer" in why or any("triple" in r for r in why)
            if blank or (refusal[i] and not match[i]):
                value = SIMPLEQA_GRADES[2]
            elif p_good[i] >= self.calibration.simpleqa_correct:
                value = SIMPLEQA_GRADES[0]
            else:
                value = SIMPLEQA_GRADES[1]
            letter = "ABC"[SIMPLEQA_GRADES.index(value)]
            out.append(
                Grade(
                    task="simpleqa",
                    value=value,
                    raw=letter,
                    judge_id=self.id,
                    notes="; ".join(f"reason: {r}" for r in why),
                    probs={str(k + 1): float(v) for k, v in enumerate(probs[i])},
                )
            )
        return out

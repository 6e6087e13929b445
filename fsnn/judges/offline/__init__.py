"""The offline judge: answer-matching features and a calibrated ordinal model, no key, no network.

``make_judge("offline")`` grades (question, gold, predicted) items without any model
download or request: it measures how the answer matches the gold answer (normalised
containment, numbers and dates compared as values, fuzzy token match, token overlap),
how it reads (length, hedging or refusal words, repetition), and maps these features
to a 1-5 grade with a proportional-odds (ordinal logistic) model fitted on a train
split of the authors' Mistral-graded release (``experiments/fit_offline_judge.py``).
The fit ships as JSON in this folder (``calibration/offline-v1.json``: feature list,
standardisation, coefficients, cut points, the train prompt ids); the judge id
``offline-v1`` names the version, so grades of different fits never mix.

Grades: the model gives a distribution over 1-5 (``Grade.probs``); the grade is its
rounded mean or its median (the largest k with P(grade >= k) >= 1/2), whichever the
calibration's ``decode`` names (chosen by cross-validated composite error on train
prompts; ``offline-v1``: the rounded mean). The composite (0.5 TO + 0.5 grade/5 >= 0.6)
asks of a grade only whether it reaches 6 - 5 TO, so what the fit must get right is the
probability of each event "grade >= k": exactly what an ordinal model estimates. The
SimpleQA letter comes from the same fit: CORRECT when P(grade >= JUDGE_THRESHOLD)
reaches the calibrated threshold, NOT_ATTEMPTED when the answer is empty or refuses
without matching the gold, else INCORRECT.

Bad input never raises: an empty answer grades 1, non-UTF-8 bytes are decoded with
replacement, answers longer than ``MAX_CHARS`` are truncated; each such case is
recorded in ``Grade.notes`` (``reason: ...``).

The modules:

- :mod:`.features`: the answer-matching features (:func:`features`, :func:`feature_matrix`).
- :mod:`.model`: the ordinal model and its calibration (:class:`Calibration`,
  :func:`load_calibration`).
- :mod:`.judge`: :class:`OfflineJudge`, a :class:`fsnn.judges.base.Judge`.
- :mod:`.fit`: fitting on the released grades (:func:`fit_calibration`).

Every name of the former single module ``fsnn/judges/offline.py`` imports from here.
"""

from __future__ import annotations

from .features import (
    FEATURES,
    MAX_CHARS,
    answer_part,
    dates,
    feature_matrix,
    features,
    normalise,
    numbers,
)
from .fit import (
    CV_FOLDS,
    L2_GRID,
    N_PROMPTS,
    SPLIT_SEED,
    TRAIN_FRACTION,
    cross_validate,
    fit_calibration,
    fit_ordinal,
    split_prompts,
)
from .judge import OfflineConfig, OfflineJudge
from .model import (
    CALIBRATION_FILE,
    DECODES,
    Calibration,
    decode_grades,
    load_calibration,
    median_grade,
    ordinal_probs,
)

# isort: split
# the private helpers of the former single module, for code that reached into it
from .features import (  # noqa: F401
    _HEDGES,
    _LABELS,
    _MONTH_RE,
    _MONTHS,
    _REFUSALS,
    _count_phrases,
    _Date,
    _features_cached,
    _fuzzy,
    _phrase_in,
    _to_text,
)
from .fit import _fit_fold, _folds, _predict, _standardise  # noqa: F401
from .model import _sigmoid  # noqa: F401

__all__ = [
    "CALIBRATION_FILE",
    "CV_FOLDS",
    "DECODES",
    "FEATURES",
    "L2_GRID",
    "MAX_CHARS",
    "N_PROMPTS",
    "SPLIT_SEED",
    "TRAIN_FRACTION",
    "Calibration",
    "OfflineConfig",
    "OfflineJudge",
    "answer_part",
    "cross_validate",
    "dates",
    "decode_grades",
    "feature_matrix",
    "features",
    "fit_calibration",
    "fit_ordinal",
    "load_calibration",
    "median_grade",
    "normalise",
    "numbers",
    "ordinal_probs",
    "split_prompts",
]

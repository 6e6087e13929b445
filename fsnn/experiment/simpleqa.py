"""SimpleQA: the questions of the CSV and their subsets.

The CSV itself (where it is, a one-time download, the one reader and its row checks) is
:mod:`fsnn.store.simpleqa_csv`, shared with the release import; its names are
re-exported here.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fsnn.errors import FsnnError
from fsnn.store.simpleqa_csv import (
    COLUMNS,
    SIMPLEQA_SHA256,
    SIMPLEQA_URL,
    read_simpleqa_csv,
    simpleqa_path,
)

__all__ = [
    "COLUMNS",
    "SIMPLEQA_SHA256",
    "SIMPLEQA_URL",
    "Question",
    "load_simpleqa",
    "select_questions",
    "simpleqa_path",
]


@dataclass(frozen=True, kw_only=True)
class Question:
    """One SimpleQA row. ``id`` is its 0-based position in the full CSV."""

    id: int
    question: str
    answer: str
    topic: str
    answer_type: str
    urls: tuple[str, ...] = ()


def load_simpleqa(
    path: str | os.PathLike | None = None, *, on_bad: Literal["error", "skip"] = "error"
) -> list[Question]:
    """Read every SimpleQA row (:func:`fsnn.store.simpleqa_csv.read_simpleqa_csv`), the
    question and answer stripped of surrounding white space.

    Raises:
        FsnnError: one line naming the file and the problem: text that is not UTF-8
            (with the byte offset and the data row holding it), an empty file, a
            missing column, a malformed CSV record, or (``on_bad="error"``) a bad row
            (row number and field).
    """
    return [
        Question(
            id=r.id,
            question=r.problem.strip(),
            answer=r.answer.strip(),
            topic=str(r.metadata.get("topic", "")),
            answer_type=str(r.metadata.get("answer_type", "")),
            urls=tuple(str(u) for u in r.metadata.get("urls", ()) or ()),
        )
        for r in read_simpleqa_csv(path, on_bad=on_bad)
    ]


def select_questions(
    questions: Sequence[Question],
    *,
    first: int | None = None,
    ids: Sequence[int] | None = None,
    stratified: int | None = None,
    seed: int = 0,
) -> list[Question]:
    """A subset: explicit ``ids``, the ``first`` N rows (paper: 500), or ``stratified``
    N rows sampled per topic in proportion (largest remainders), seeded."""
    chosen = sum(x is not None for x in (first, ids, stratified))
    if chosen > 1:
        raise FsnnError("choose one of first / ids / stratified")
    if ids is not None:
        by_id = {q.id: q for q in questions}
        repeated = sorted({i for i in ids if list(ids).count(i) > 1})
        if repeated:  # a repeated id would be answered, steered and counted twice
            raise FsnnError(f"SimpleQA id(s) given more than once: {repeated[:5]}")
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise FsnnError(f"unknown SimpleQA id(s): {unknown[:5]}")
        return [by_id[i] for i in ids]
    if first is not None:
        if first <= 0:
            raise FsnnError(f"the number of questions must be > 0, got {first}")
        return list(questions[:first])
    if stratified is not None:
        if stratified <= 0:
            raise FsnnError(f"the number of stratified questions must be > 0, got {stratified}")
        groups: dict[str, list[Question]] = defaultdict(list)
        for q in questions:
            groups[q.topic].append(q)
        total = len(questions)
        quotas = {t: stratified * len(g) / total for t, g in groups.items()}
        counts = {t: int(v) for t, v in quotas.items()}
        for t in sorted(quotas, key=lambda t: quotas[t] - counts[t], reverse=True)[
            : stratified - sum(counts.values())
        ]:
            counts[t] += 1
        rng = random.Random(seed)
        picked = [q for t in sorted(groups) for q in rng.sample(groups[t], counts[t])]
        return sorted(picked, key=lambda q: q.id)
    return list(questions)

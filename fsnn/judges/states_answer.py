"""Does a completion state the gold answer? A strict, rule-based check validated on hand labels.

Token overlap (TO >= 0.5, :mod:`fsnn.metrics`) counts a completion as reaching the answer
when it holds half of the gold's word types. That counts completions which only echo the
question's own words (gold "Nelson Oduber", question "... Dangui Oduber ...": "Oduber"
alone reaches 0.5), name half of a multi-part answer, or hold the answer inside a loop
("Toronto, Canada" x7). This check counts none of them.

The rule: a completion *states the answer* when

1. it is readable (:func:`fsnn.degeneration.readable`: no loop, no debris);
2. every *required* token of the gold answer appears among the completion's tokens.
   The required tokens are the gold's content tokens (:func:`answer_tokens`; stop words,
   titles, a weekday beside a date and single-letter initials dropped) that the question
   does not contain. When the question contains all of them (or the gold has no content
   token), the whole normalised gold phrase must appear word for word, at least once
   where it is not an echo of the question (the phrase with its neighbouring word is
   not a run of the question's words: "won two maxi challenges in Season 4" does not
   state "4" for "How many ... did she win in Season 4?");
3. when the completion commits explicitly ("The answer is X", "Answer: X"; see
   :func:`commitments`), some commitment states the answer: listing the gold among
   options and then choosing another ("A. Piano B. Violin ... The answer is (A) Piano")
   is not stating it;
4. an enumeration is not a statement: when the stated alternative is a number or date
   and the completion runs through :data:`ENUMERATION_MIN` or more distinct numbers or
   dates the question lacks ("2000\n2001\n2002\n2003\n2004\n2005 ...", "2013-01-01\n
   2013-01-02 ..."), it is stated only by a commitment that names it (rule 3); the
   fluent study's screen found searches counting their way through years (added after
   the labels' validation, re-scored on every split in ``experiments/answer_check/``);
5. a gold with alternatives is stated when any alternative is (:func:`alternatives`):
   the answer without a parenthesis, a closing parenthesised alias ("Nelson Oduber
   (Nelson Orlando Oduber)", "... Association (ISKA)"), "X also known as Y", and the
   parts of "X or Y" when each part is a number/date or has two or more content tokens
   ("Bride or Die" is one title, not two answers).

Tokens compare after one normalisation (:func:`normalise_answer_text`, defined with the
package's other answer normalisations in :mod:`fsnn.judges.normalise`), the same for
gold, question and completion:

- case (casefold), Unicode compatibility forms and diacritics ("Sugéno" = "Sugeno",
  "ø" = "o", "ß" = "ss");
- possessives ("Sugeno's" = "Sugeno"), hyphens and punctuation (word breaks; a
  decimal point between digits stays), apostrophes inside a word ("O'Brien" = "OBrien");
- numbers: thousands separators ("1,000" = "1000"), number words ("three" = "3",
  "twenty-three" = "23", "two hundred" = "200"), scales ("3.5 million" = "3500000"),
  ordinals ("1st" = "first" = "1"), decimals ("3.50" = "3.5"), "%" = "percent";
  a number is one token, so "3" never matches "13", "2003" or "3.5";
- dates become one token: "April 2, 1985" = "2 April 1985" = "2nd of April, 1985" =
  "1985-04-02" -> ``1985-04-02``; "April 1985" -> ``1985-04``; "April 2" -> ``--04-02``.
  A completion's date also stands for its coarser forms (``1985-04-02`` holds
  ``1985-04``, ``--04-02`` and the year ``1985``), never the reverse, and its day is not
  a bare number ("April 3, 2003" does not state "3");
- aliases: "Univ." = "University", "St." = "Saint", "Mt." = "Mount", "Ft." = "Fort",
  "Dr." = "Doctor", "Prof." = "Professor", "Jr." = "Junior", "Sr." = "Senior"; titles
  ("Dr.", "Mr.", "Sir", "Jr.", ...) are never required.

Validation: hand labels of ``experiments/answer_check/`` (one AI labeller, blind to the
check), tune split only: 130 completions of 83 questions, stratified by gold overlap
(65 >= 0.5, 65 below) and origin (Gemma-2-2B release texts, this project's small models).
TP 14, FP 1, FN 1, TN 114: precision 14/15 = 0.93 (95% Wilson 0.70-0.99), recall 14/15 =
0.93 (0.70-0.99); reweighted to the tune population the check's rate of stated answers is
5.8% against the labels' 6.0%. On the same items TO >= 0.5 has precision 15/64 (the
rest echo, half-answer or loop). The rule was written first and then corrected on the
tune split's disagreements (weekday beside a date; echoes in phrase mode; commitments);
the held-out split was not read. Details: ``experiments/answer_check/tune_report.md``.

Example:
    >>> states_answer("Who won the award?", "Michio Sugeno", "It went to Michio Sugéno.")
    True
    >>> check("Who succeeded Dangui Oduber?", "Nelson Oduber", "Oduber.").missing
    ('nelson',)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fsnn.errors import FsnnError

from .degeneration import readable
from .normalise import DATE_TOKEN as _DATE_TOKEN
from .normalise import answer_tokens, normalise_answer_text
from .normalise import drop_articles as _no_articles
from .normalise import fold as _fold

__all__ = [
    "STOP_WORDS",
    "TITLES",
    "AnswerCheck",
    "alternatives",
    "answer_tokens",
    "check",
    "commitments",
    "normalise_answer_text",
    "required_tokens",
    "states_answer",
    "states_answer_many",
]

STOP_WORDS = frozenset(
    """a an the of and or nor but in on at to for by with from as into onto over under
    about after before between during than then is was were be been being are am it its
    this that these those which who whom whose what when where why how there their they
    he she his her him them we our you your i me my not no so also both either neither
    each per via has have had do does did will would can could shall should may might
    must any all some such only just very""".split()
)
TITLES = frozenset("mr mrs ms miss mx doctor professor sir dame lord lady junior senior".split())
_WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())


def _with_coarser(tokens: Sequence[str]) -> set[str]:
    """The token set, each date token adding the coarser dates it implies (never the day)."""
    out = set(tokens)
    for tok in tokens:
        m = _DATE_TOKEN.fullmatch(tok) if "-" in tok else None
        if m and m.group("y"):
            y, mo, d = m.group("y"), m.group("m"), m.group("d")
            out.add(y)
            if mo:
                out.add(f"{y}-{mo}")
            if mo and d:
                out.add(f"--{mo}-{d}")
    return out


# --------------------------------------------------------------------------- the rule


def alternatives(answer: str) -> tuple[str, ...]:
    """The gold answer's alternatives, the whole answer first.

    - Parentheses: the answer without them; and the parenthesised part alone when it
      closes the answer and is an alias of the text before it: an acronym of it
      ("International Sport Kickboxing Association (ISKA)") or sharing a content token
      with it ("Nelson Oduber (Nelson Orlando Oduber)"). A qualifier is not an alias
      ("Red Nexus Rising (Interlude)", "Heidelberg (024)").
    - "X, also known as Y" / "X a.k.a. Y": X and Y.
    - "X or Y" (no comma before "or") when each part is a number or date or has two or
      more content tokens ("1983 or 1984"; "Bride or Die" is one title).

    Example:
        >>> alternatives("Nelson Oduber (Nelson Orlando Oduber)")
        ('Nelson Oduber (Nelson Orlando Oduber)', 'Nelson Oduber', 'Nelson Orlando Oduber')
    """
    alts = [answer]
    if "(" in answer:
        outer = re.sub(r"\([^()]*\)", " ", answer)
        alts.append(outer)
        last = re.fullmatch(r"(?P<outer>[^()]*)\((?P<alias>[^()]*)\)[\s.]*", answer, flags=re.S)
        if last and _is_alias(last.group("alias"), last.group("outer")):
            alts.append(last.group("alias"))
    for text in list(alts):
        parts = re.split(
            r",?\s+(?:locally\s+)?(?:also known as|known as|a\.?k\.?a\.?)\s+", text, flags=re.I
        )
        if len(parts) > 1:
            alts.extend(parts)
    for text in list(alts):
        parts = re.split(r"(?<!,)\s+or\s+", text.strip(), flags=re.I)
        if len(parts) > 1 and all(_is_option(p) for p in parts):
            alts.extend(parts)
    out = []
    for alt in alts:
        alt = " ".join(alt.split()).strip(" ,;.\"'")
        if alt and alt not in out and answer_tokens(alt):
            out.append(alt)
    return tuple(out)


def _is_alias(alias: str, outer: str) -> bool:
    """``alias`` abbreviates ``outer`` (its letters are the initials of ``outer``'s words,
    stop words optional) or shares a content token with it."""
    words = [w for w in answer_tokens(outer) if not w.isdigit()]
    letters = re.sub(r"[^a-z]", "", _fold(alias))
    initials = "".join(w[0] for w in words)
    content_initials = "".join(w[0] for w in words if w not in STOP_WORDS)
    if re.fullmatch(r"[A-Z][A-Za-z&.]{1,9}", alias.strip()) and letters in (
        initials,
        content_initials,
    ):
        return True
    return bool(set(_content(answer_tokens(alias))) & set(_content(answer_tokens(outer))))


def _is_option(part: str) -> bool:
    content = _content(answer_tokens(part))
    return len(content) >= 2 or (len(content) == 1 and _is_numeric(content[0]))


def _is_numeric(token: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d+)?|\d{4}-\d\d(?:-\d\d)?|--\d\d-\d\d", token))


def _content(
    tokens: Sequence[str], asked: frozenset[str] | set[str] = frozenset()
) -> tuple[str, ...]:
    """Content tokens not in ``asked``: stop words and titles out; a weekday out next to a
    date ("Wednesday, August 23, 2023"); single letters (initials) out unless nothing else
    is left ("Bruce W. Hapke" -> bruce, hapke; "Vitamin C" asked about vitamins -> c)."""
    dated = any(_is_numeric(t) and "-" in t for t in tokens)
    words = [
        t
        for t in tokens
        if t not in STOP_WORDS
        and t not in TITLES
        and t not in asked
        and not (dated and t in _WEEKDAYS)
    ]
    long = [t for t in words if len(t) > 1 or t.isdigit()]
    return tuple(dict.fromkeys(long or words))


def required_tokens(question: str, answer: str) -> tuple[str, ...]:
    """The content tokens of ``answer`` (one alternative) that ``question`` does not contain.

    Example:
        >>> required_tokens("Who succeeded Dangui Oduber?", "Nelson Oduber")
        ('nelson',)
    """
    return _content(answer_tokens(answer), _with_coarser(answer_tokens(question)))


@dataclass(frozen=True, kw_only=True)
class AnswerCheck:
    """The verdict on one completion and why.

    Attributes:
        states: the completion states the answer (module docstring: readable text, no
            required token missing, and any explicit commitment holds the answer).
        readable: :func:`fsnn.degeneration.readable` of the whole completion.
        required: normalised tokens required of the best alternative (the normalised
            gold phrase when ``phrase``).
        missing: the required tokens the completion lacks (with ``phrase``: the whole
            phrase when it is absent or only echoes the question).
        phrase: the question contains every content token of the alternative, so the
            whole phrase was required word for word, outside echoes of the question.
        alternative: the alternative of the gold the verdict is about.
        commitment: the completion's explicit answer ("The answer is X", "Answer: X")
            when it has one: the verdict then also needs the answer in it.
    """

    states: bool
    readable: bool
    required: tuple[str, ...]
    missing: tuple[str, ...]
    phrase: bool = False
    alternative: str = ""
    commitment: str = ""


def _runs(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _phrase_found(needle: Sequence[str], hay: Sequence[str], question: Sequence[str]) -> bool:
    """``needle`` occurs in ``hay`` at least once where it does not echo the question:
    the occurrence with its left or right neighbour is not a run of ``question``
    ("won two ... in Season 4" does not state "4" for "... in Season 4 of RPDR?")."""
    n = len(needle)
    echo = _runs(question, n + 1)
    for i in range(len(hay) - n + 1):
        here = tuple(hay[i : i + n])
        if here != tuple(needle) and not (n == 1 and needle[0] in _with_coarser(here)):
            continue
        left = tuple(hay[i - 1 : i + n]) if i > 0 else ()
        right = tuple(hay[i : i + n + 1]) if i + n < len(hay) else ()
        if left not in echo and right not in echo:
            return True
    return False


def _check_one(question: str, alt: str, comp: tuple[str, ...], comp_set: set[str]) -> AnswerCheck:
    required = required_tokens(question, alt)
    if required:
        missing = tuple(t for t in required if t not in comp_set)
        return AnswerCheck(
            states=not missing, readable=True, required=required, missing=missing, alternative=alt
        )
    phrase = _no_articles(answer_tokens(alt)) or answer_tokens(alt)
    found = _phrase_found(phrase, _no_articles(comp), _no_articles(answer_tokens(question)))
    return AnswerCheck(
        states=found,
        readable=True,
        required=phrase,
        missing=() if found else phrase,
        phrase=True,
        alternative=alt,
    )


# distinct numbers/dates (those the question lacks) from which a completion is a list of
# candidates rather than a statement of one (rule 4); a sentence with a date, a count and
# a year stays below it
ENUMERATION_MIN = 4


def _enumerates(question: str, text: str) -> bool:
    """True when ``text`` names ENUMERATION_MIN or more distinct numbers or dates that
    ``question`` does not contain (coarser forms of one date count once)."""
    asked = set(answer_tokens(question))
    values = {t for t in answer_tokens(text) if _is_numeric(t) and t not in asked}
    years = {v[:4] for v in values if re.fullmatch(r"\d{4}-\d\d(?:-\d\d)?", v)}
    return len(values - years) >= ENUMERATION_MIN


def _best(question: str, alts: Sequence[str], text: str) -> AnswerCheck:
    """The alternative stated in ``text``, else the one missing the smallest share."""
    comp = answer_tokens(text)
    comp_set = _with_coarser(comp)
    checks = [_check_one(question, alt, comp, comp_set) for alt in alts]
    return min(checks, key=lambda c: (not c.states, len(c.missing) / max(1, len(c.required))))


_COMMITMENT = re.compile(
    r"\banswer(?:\s+(?:is|would be|was)\s*:?|\s*:)[\s*_\"'`]*(?P<text>[^\n]*)(?:\n\s*(?P<next>[^\n]*))?",
    re.I,
)


def commitments(text: str) -> list[str]:
    """The explicit answers of ``text``: what follows "answer is" / "answer:" on its line
    (or on the next line when nothing follows), e.g. "The answer is **(A) Piano**."

    Example:
        >>> commitments("A. Piano B. Violin\\nThe answer is **(A) Piano**.\\nWhy: ...")
        ['(A) Piano**.']
    """
    out = []
    for m in _COMMITMENT.finditer(text):
        found = m.group("text").strip() or (m.group("next") or "").strip()
        if answer_tokens(found):
            out.append(found)
    return out


def check(question: str, answer: str, completion: str) -> AnswerCheck:
    """The verdict of the rule (module docstring) with its reasons.

    Among the gold's alternatives the one stated (else the one missing the smallest
    share of its tokens) is reported.

    Raises:
        FsnnError: an argument is not text, or the answer has no token.
    """
    for name, value in (("question", question), ("answer", answer), ("completion", completion)):
        if not isinstance(value, str):
            raise FsnnError(f"{name} must be text, got {type(value).__name__}: {value!r}")
    alts = alternatives(answer)
    if not alts:
        raise FsnnError(f"the answer {answer!r} has no word or number to look for")
    ok = readable(completion)
    best = _best(question, alts, completion)
    committed = [(c, _best(question, alts, c)) for c in commitments(completion)]
    commitment, commit_ok = "", True
    stated = [c for c, v in committed if v.states]
    if committed:
        commit_ok = bool(stated)
        commitment = stated[0] if stated else committed[0][0]
    numeric = all(_is_numeric(t) for t in best.required) and bool(best.required)
    if best.states and numeric and not stated and _enumerates(question, completion):
        commit_ok = False  # a list of candidates, none chosen (rule 4)
    return AnswerCheck(
        states=ok and best.states and commit_ok,
        readable=ok,
        required=best.required,
        missing=best.missing,
        phrase=best.phrase,
        alternative=best.alternative,
        commitment=commitment,
    )


def states_answer(question: str, answer: str, completion: str) -> bool:
    """True when ``completion`` is readable and states ``answer`` (see :func:`check`)."""
    return check(question, answer, completion).states


def states_answer_many(
    questions: Sequence[str] | np.ndarray,
    answers: Sequence[str] | np.ndarray,
    completions: Sequence[str] | np.ndarray,
) -> np.ndarray:
    """:func:`states_answer` over aligned arrays; numpy broadcasting applies, so one
    question/answer can be checked against many completions.

    Returns:
        bool array of the broadcast shape, e.g. (prompt,) or (prompt, trial).
    """
    try:
        q, a, c = np.broadcast_arrays(
            np.asarray(questions, dtype=object),
            np.asarray(answers, dtype=object),
            np.asarray(completions, dtype=object),
        )
    except ValueError as err:
        raise FsnnError(f"questions, answers and completions do not align: {err}") from None
    out = np.fromiter(
        (
            states_answer(qi, ai, ci)
            for qi, ai, ci in zip(q.ravel(), a.ravel(), c.ravel(), strict=True)
        ),
        dtype=bool,
        count=q.size,
    )
    return out.reshape(q.shape)

"""Analysis: read finished runs, summarise them with intervals, draw and report them;
and reproduce the paper from the authors' released results.

- :mod:`.stats`: bootstrap and Wilson intervals, paired tests.
- :mod:`.summary`: the one summary of a results dataset.
- :mod:`.inspect`: ``fsnn show`` and ``fsnn compare``.
- :mod:`.figures`: every figure, drawn only from saved datasets.
- :mod:`.report`: ``fsnn report``, one static HTML page.
- :mod:`.release`, :mod:`.release_grades`: the authors' release imported into our schema,
  and its Mistral grades as judge test data.
- :mod:`.judge_agreement`: another judge against the released Mistral grades.

May import: :mod:`fsnn.errors`, :mod:`fsnn.store`, :mod:`fsnn.judges`.
"""

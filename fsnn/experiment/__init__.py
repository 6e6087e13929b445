"""The experiment: Fusion Steering on SimpleQA as resumable stages over a run folder.

- :mod:`.config_file`: run configurations from TOML files, the paper's preset.
- :mod:`.pipeline`: :class:`RunConfig` and :func:`run_pipeline` (``fsnn run``).
- :mod:`.stages`: baseline -> failures -> references -> search -> results, as functions.
- :mod:`.simpleqa`: the SimpleQA CSV and its subsets.

May import every stage folder below it: :mod:`fsnn.errors`, :mod:`fsnn.store`,
:mod:`fsnn.models`, :mod:`fsnn.backends`, :mod:`fsnn.steering`, :mod:`fsnn.judges`,
:mod:`fsnn.search`, :mod:`fsnn.analysis`.
"""

"""fsnn.experiment.stages: names kept for this release."""

from __future__ import annotations

import pytest


def test_results_dataset_old_name_warns_and_is_score_results():
    import fsnn.experiment.stages as stages

    with pytest.warns(FutureWarning, match="score_results"):
        assert stages.results_dataset is stages.score_results

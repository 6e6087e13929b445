"""NDIF down mid-search: a service failure told from a job error, and a stopped search resumed to the same trials.

(The whole campaign is benchmarks/reliability.py.)
"""

from __future__ import annotations

import pytest

from fsnn.errors import FsnnError


def test_call_with_retries_tells_a_service_failure_from_a_job_error():
    import httpx

    from fsnn.backends.ndif import call_with_retries
    from fsnn.backends.retry import RetryPolicy
    from fsnn.errors import BackendUnavailable

    req = httpx.Request("POST", "https://ndif.example/request")

    def status(code):
        def fn():
            raise httpx.HTTPStatusError(
                str(code), request=req, response=httpx.Response(code, request=req)
            )

        return fn

    policy = RetryPolicy(attempts=2, backoff_base=0.0)
    for fn in (
        status(503),
        status(401),
        lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),
    ):
        with pytest.raises(BackendUnavailable):
            call_with_retries(fn, policy=policy, sleep=lambda s: None)

    def job_error():
        raise RuntimeError("job ERROR: shape mismatch in the trace")

    with pytest.raises(FsnnError) as info:
        call_with_retries(job_error, policy=policy, sleep=lambda s: None)
    assert not isinstance(info.value, BackendUnavailable)


def test_backend_down_mid_search_stops_and_resumes_to_the_same_trials(monkeypatch, tmp_path):
    """An outage is not the trial's fault: no FAILED trial, the resume asks nothing new."""
    import optuna

    from fsnn.errors import BackendUnavailable
    from fsnn.search.run import SearchConfig, open_storage, run_search
    from fsnn.steering.layout import SegmentLayout
    from tests.search.test_search import _stub_generate, _stub_items, _stub_ppl, _StubModel

    cfg = SearchConfig(n_trials=3, batch_trials=1, batch_rows=2, sampler="tpe", n_startup_trials=1)
    monkeypatch.setattr("fsnn.steering.steer.steered_generate", _stub_generate())
    clean = run_search(
        _StubModel(),
        _stub_items(),
        SegmentLayout.full(4),
        cfg,
        storage=open_storage(f"sqlite:///{tmp_path}/clean.db"),
        ppl=_stub_ppl,
        progress=False,
    )
    works = _stub_generate()
    calls = []

    def down_once(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise BackendUnavailable(
                "steering batch of 2 rows failed at NDIF after 3 attempts: HTTP 503"
            )
        return works(*a, **k)

    monkeypatch.setattr("fsnn.steering.steer.steered_generate", down_once)
    storage = open_storage(f"sqlite:///{tmp_path}/down.db")
    with pytest.raises(BackendUnavailable):
        run_search(
            _StubModel(),
            _stub_items(),
            SegmentLayout.full(4),
            cfg,
            storage=storage,
            ppl=_stub_ppl,
            progress=False,
        )
    states = [
        t.state
        for s in optuna.get_all_study_summaries(storage)
        for t in optuna.load_study(study_name=s.study_name, storage=storage).trials
    ]
    assert optuna.trial.TrialState.FAIL not in states and optuna.trial.TrialState.RUNNING in states
    again = run_search(
        _StubModel(),
        _stub_items(),
        SegmentLayout.full(4),
        cfg,
        storage=storage,
        ppl=_stub_ppl,
        progress=False,
    )
    assert int(clean.failed_trials.sum()) == 0 and (clean.best_trial.values >= 0).all()
    assert again.drop_attrs().identical(clean.drop_attrs())

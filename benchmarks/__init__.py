"""Benchmarks of fsnn (issue 9): run ``python -m benchmarks.run [--quick]``.

Not part of the package or of the test suite; CI never runs them and no test asserts a
timing. Results go to ``benchmarks/results.json`` and ``docs/benchmarks.md``.
"""

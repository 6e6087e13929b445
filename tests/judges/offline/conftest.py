"""Fixtures of the offline judge's tests: the released grades, and no network."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def release():
    folder = os.environ.get("FSNN_RELEASE_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("FSNN_RELEASE_DIR is not set (CI sets it to the shared release folder)")
    return folder


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

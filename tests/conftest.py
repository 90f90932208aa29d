"""Fixtures: a real gRPC server on an ephemeral loopback port over a temporary LMDB folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from identity.app import App
from identity.client import IdentityClient
from identity.config import Settings
from identity.server import create_server

from credentials import TEST_KEYS


# CI replays the same examples every run (a red build must be reproducible); local runs
# keep exploring new random examples and save failures in .hypothesis/ for replay.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@dataclass
class RunningServer:
    """A server over ``data_dir``; ``restart`` stops it and starts a new one on the same data."""

    settings: Settings
    app: App
    address: str
    _server: object
    _started: list[RunningServer]

    def stop(self) -> None:
        self._server.stop(None).wait()  # type: ignore[attr-defined]
        self.app.close()

    def restart(self) -> RunningServer:
        self.stop()
        return start_server(self.settings, self._started)


def start_server(settings: Settings, started: list[RunningServer]) -> RunningServer:
    app = App.open(settings)
    server, port = create_server(app, "127.0.0.1:0", max_workers=8)
    server.start()
    running = RunningServer(settings, app, f"127.0.0.1:{port}", server, started)
    started.append(running)
    return running


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers with settings overrides; every one is stopped after the test."""
    started: list[RunningServer] = []

    def make(**overrides: object) -> RunningServer:
        data_dir = tmp_path / f"data{len(list(tmp_path.glob('data*')))}"
        overrides.setdefault("api_keys", TEST_KEYS)
        settings = Settings.load(env={}, data_dir=data_dir,
                                 map_size="64MiB", **overrides)
        return start_server(settings, started)

    yield make
    for running in started:
        try:
            running.stop()
        except Exception:
            pass


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


@pytest.fixture
def client(server: RunningServer) -> Iterator[IdentityClient]:
    with IdentityClient(server.address) as c:
        yield c

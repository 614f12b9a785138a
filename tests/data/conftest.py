"""Fixtures for the tests of :mod:`thermotrain.data`.

- ``shared_data``: the real MNIST / Fashion-MNIST files in ``../shared/data`` (skips if absent);
- ``http_root``: a local ``http.server`` on 127.0.0.1 serving a temporary folder (never the
  internet), with a log of requested paths;
- writers for tiny IDX files and CIFAR-10 python batches in the exact on-disk formats.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared data folder with the real MNIST and Fashion-MNIST IDX files."""
    needed = [SHARED_DATA / d / "train-images-idx3-ubyte.gz" for d in ("mnist", "fashion_mnist")]
    if not all(p.is_file() for p in needed):
        pytest.skip(
            f"real MNIST/Fashion-MNIST files not found under {SHARED_DATA} "
            "(expected ../shared/data beside the project root)"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the developer's THERMOTRAIN_DATA or ~/.cache."""
    monkeypatch.delenv("THERMOTRAIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ----------------------------------------------------------------------------- HTTP server


@dataclass
class LocalServer:
    """A folder served over HTTP on 127.0.0.1; ``requests`` logs the paths asked for."""

    root: Path
    url: str
    requests: list[str]


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[LocalServer]:
    """Serve ``tmp_path / "www"`` on an ephemeral 127.0.0.1 port for the test's duration."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield LocalServer(root, f"http://127.0.0.1:{server.server_address[1]}/", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""Suite-wide settings.

- One intra-op thread (the tiny test models gain nothing from more, and on a 2-core machine extra
  threads only contend).
- A private Hugging Face environment, set before anything imports ``huggingface_hub`` (which reads
  these variables once, at import): ``HF_HOME`` is a fresh temporary folder, so tests never read or
  write the user's cache or token; ``HF_ENDPOINT`` is a loopback port where the ``olah`` fixture
  serves a real Hub (started only when a test asks for it); offline mode is off for the session
  (tests of offline behaviour pass ``local_files_only=True`` or run a subprocess with
  ``HF_HUB_OFFLINE=1``).
- No network beyond loopback: every test runs under a :class:`netguard.NetworkGuard`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if "huggingface_hub" in sys.modules:  # too late: it has read HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE already
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could isolate it from the user's "
                       "Hugging Face cache and the real Hub; find the pytest plugin that imports it")

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
             "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
             "HF_STORED_TOKENS_PATH", "HUGGINGFACE_CO_STAGING", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
    os.environ.pop(_var, None)
HF_HOME = tempfile.mkdtemp(prefix="ae-zoo-tests-hf-")
atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = HF_HOME
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_loopback_port()}"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
# Loopback must never go through a proxy an outer environment may set.
_no_proxy = [h for h in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if h.strip()]
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join([*_no_proxy, "127.0.0.1", "localhost", "::1"])

import pytest  # noqa: E402  (after the environment above, on purpose)
import torch  # noqa: E402
from netguard import NetworkGuard  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    """Every test: connecting, resolving or sending anywhere but loopback raises NetworkBlockedError.

    Request it by name to use ``network_guard.block_all()`` (no network at all, loopback included).
    """
    guard = NetworkGuard()
    guard.install(monkeypatch)
    return guard


@pytest.fixture(scope="session")
def olah_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Hub read server (olah) on the ``HF_ENDPOINT`` port, for the whole session once started.

    Fails (never skips) with olah's log if it cannot start.
    """
    from urllib.parse import urlsplit

    from hubserver import OlahServer

    server = OlahServer(tmp_path_factory.mktemp("olah"), urlsplit(os.environ["HF_ENDPOINT"]).port)
    try:
        server.start()
    except RuntimeError as err:
        pytest.fail(f"cannot start the olah Hub server: {err}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def olah(olah_server):
    """The session's olah, running (a test that stopped it to simulate an outage gets it restarted)."""
    if not olah_server.running:
        try:
            olah_server.start()
        except RuntimeError as err:
            pytest.fail(f"cannot restart the olah Hub server: {err}", pytrace=False)
    return olah_server


@pytest.fixture(scope="session")
def hub_write_server(olah_server):
    """The Hub write API on a loopback port, committing into the repositories olah serves."""
    from hub_write_server import HubWriteServer

    server = HubWriteServer(olah_server.mirrors).start()
    yield server
    server.stop()

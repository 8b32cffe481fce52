"""zoo and the Hugging Face Hub, through the unmodified ``huggingface_hub`` client and real servers.

Reads go to olah (``hubserver.OlahServer``) serving git repositories on loopback, at the
``HF_ENDPOINT`` that ``conftest.py`` set before ``huggingface_hub`` was imported; writes go to
``hub_write_server.HubWriteServer``, whose commits land in those same repositories. ``HF_HOME`` is
a temporary folder for the session. Nothing is mocked: what is asserted is what zoo does with real
HTTP answers (weights bit for bit, the commit sha it reports, the messages users read).

Every test publishes to its own repo name, so tests share the session cache without interfering.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hubserver import GitRepo, OlahServer
from netguard import NetworkBlockedError, NetworkGuard

import zoo
from zoo.cli import main
from zoo.errors import CheckpointError
from zoo.folder import default_card
from zoo.hub import HubUnavailableError

TINY = {"input_shape": (1, 8, 8), "latent_dim": 2, "hidden_dims": (16,)}
HF_HOME = Path(os.environ["HF_HOME"])
ENDPOINT = os.environ["HF_ENDPOINT"]
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Published:
    """A model committed to an olah repo."""

    repo: GitRepo
    model: torch.nn.Module
    folder: Path
    sha: str

    @property
    def repo_id(self) -> str:
        return self.repo.repo_id


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.create("vae", **TINY)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def olah_hits(olah: OlahServer, repo_id: str) -> list[tuple[str, str, int]]:
    """olah's logged requests that concern ``repo_id``."""
    return [r for r in olah.requests() if f"/{repo_id}/" in r[1]]


def cached_snapshot(repo_id: str, sha: str) -> Path:
    return HF_HOME / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha


@pytest.fixture
def publish(olah: OlahServer, tmp_path: Path, request: pytest.FixtureRequest):
    """``publish(suffix="", seed=0, branch="main", repo=None)``: save a tiny VAE and commit it to a repo.

    Repo names derive from the test name, so each test has its own repos.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:60]
    counter = iter(range(1000))

    def _publish(suffix: str = "", seed: int = 0, branch: str = "main", repo: GitRepo | None = None) -> Published:
        model = tiny_model(seed)
        folder = tmp_path / f"model-{next(counter)}"
        model.save_pretrained(folder)
        repo = repo or olah.repo(f"org/{base}{'-' + suffix if suffix else ''}")
        sha = repo.commit_folder(folder, f"model seed {seed}", branch=branch)
        return Published(repo, model, folder, sha)

    return _publish


def assert_clear_unavailable(err: BaseException, shown: str) -> str:
    """A HubUnavailableError listing where it looked (cache, then Hub) and every way out."""
    assert isinstance(err, HubUnavailableError) and isinstance(err, CheckpointError)
    message = str(err)
    assert f"Hugging Face cache ({HF_HOME / 'hub'}) for {shown}: not cached" in message, message
    assert "Ways out:" in message
    assert "zoo.load('local-dir:PATH')" in message
    assert "pretrained=False" in message
    return message


# -- the network guard (conftest.py) ---------------------------------------------------------------


def test_network_guard_blocks_everything_but_loopback(network_guard: NetworkGuard, tmp_path: Path) -> None:
    with socket.socket() as sock, pytest.raises(NetworkBlockedError, match=r"connect to 93\.184\.216\.34:80") as info:
        sock.connect(("93.184.216.34", 80))
    assert "Only loopback (127.0.0.0/8, ::1, localhost)" in str(info.value)
    with socket.socket() as sock, pytest.raises(NetworkBlockedError, match="93.184.216.34"):
        sock.connect_ex(("93.184.216.34", 80))
    with pytest.raises(NetworkBlockedError, match="example.com"):
        socket.create_connection(("example.com", 80), timeout=1)
    with pytest.raises(NetworkBlockedError, match="huggingface.co"):
        socket.getaddrinfo("huggingface.co", 443)
    # The real client, pointed at the real Hub, stops at the guard (not at a retry loop or a DNS failure).
    from huggingface_hub import HfApi

    with pytest.raises(NetworkBlockedError, match="huggingface.co"):
        HfApi(endpoint="https://huggingface.co").model_info("openai-community/gpt2")

    # Loopback and Unix sockets work ...
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5):
            pass
        # ... except under block_all(), which refuses loopback too, then restores.
        with network_guard.block_all(), pytest.raises(NetworkBlockedError, match="block_all"):
            socket.create_connection(server.getsockname(), timeout=5)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as unix_server:
        unix_server.bind(str(path))
        unix_server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))


# -- loading from the Hub --------------------------------------------------------------------------


def test_load_from_hub(publish, olah: OlahServer, network_guard: NetworkGuard) -> None:
    pub = publish()
    model = zoo.load(f"hf-hub:{pub.repo_id}")
    assert same_weights(model, pub.model)
    assert not model.training
    assert model.pretrained_info["source"] == "hf-hub"
    assert model.pretrained_info["repo_id"] == pub.repo_id
    assert model.pretrained_info["revision"] == pub.sha
    snapshot = cached_snapshot(pub.repo_id, pub.sha)
    assert model.pretrained_info["path"] == str(snapshot)
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (snapshot / name).read_bytes() == (pub.folder / name).read_bytes(), name
    assert olah_hits(olah, pub.repo_id), "the first load must have downloaded from olah"


def test_from_pretrained_takes_a_bare_repo_id_and_checks_the_class(publish) -> None:
    from zoo_plugins.autoencoders import Autoencoder
    from zoo_plugins.vae import VAEModel

    pub = publish()
    model = VAEModel.from_pretrained(pub.repo_id, revision=pub.sha)  # as Hugging Face users type it
    assert isinstance(model, VAEModel) and same_weights(model, pub.model)
    assert model.pretrained_info["repo_id"] == pub.repo_id and model.pretrained_info["revision"] == pub.sha
    assert same_weights(zoo.from_pretrained(f"{pub.repo_id}@{pub.sha}"), pub.model)
    with pytest.raises(zoo.errors.ConfigError,
                       match="holds a model of class VAEModel \\(variant 'vae'\\), not of class Autoencoder"):
        Autoencoder.from_pretrained(pub.repo_id)
    with pytest.raises(HubUnavailableError, match="there is no local folder 'org/no-such-model' either"):
        zoo.from_pretrained("org/no-such-model", local_files_only=True)


def test_load_by_branch_tag_and_sha(publish) -> None:
    first = publish(seed=1)  # main: first, tagged v1
    first.repo.tag("v1")
    on_dev = publish(seed=2, branch="dev", repo=first.repo)  # dev: first -> on_dev
    latest = publish(seed=3, repo=first.repo)  # main: first -> latest
    repo_id = first.repo_id
    cases = [
        (f"hf-hub:{repo_id}", {}, latest),
        (f"hf-hub:{repo_id}@main", {}, latest),
        (f"hf-hub:{repo_id}@dev", {}, on_dev),
        (f"hf-hub:{repo_id}@v1", {}, first),
        (f"hf-hub:{repo_id}@{first.sha}", {}, first),
        (f"hf-hub:{repo_id}", {"revision": "dev"}, on_dev),
        (f"hf-hub:{repo_id}@main", {"revision": first.sha}, first),  # the keyword wins over @REV
    ]
    for name, kwargs, expected in cases:
        model = zoo.load(name, **kwargs)
        assert model.pretrained_info["revision"] == expected.sha, (name, kwargs)
        assert same_weights(model, expected.model), (name, kwargs)
    assert len({first.sha, on_dev.sha, latest.sha}) == 3


def test_cached_load_makes_no_request(publish, olah: OlahServer, network_guard: NetworkGuard) -> None:
    pub = publish()
    zoo.load(f"hf-hub:{pub.repo_id}")
    before = olah_hits(olah, pub.repo_id)
    assert before
    with network_guard.block_all():  # any connect or send, loopback included, raises
        for name in (f"hf-hub:{pub.repo_id}", f"hf-hub:{pub.repo_id}@main", f"hf-hub:{pub.repo_id}@{pub.sha}"):
            model = zoo.load(name)
            assert same_weights(model, pub.model)
            assert model.pretrained_info["revision"] == pub.sha
    assert network_guard.blocked == []
    assert olah_hits(olah, pub.repo_id) == before
    # Not vacuous: a real client request is caught, over a new connection or a pooled keep-alive one.
    from huggingface_hub import snapshot_download

    with network_guard.block_all(), pytest.raises(NetworkBlockedError, match="block_all"):
        snapshot_download(pub.repo_id)
    assert network_guard.blocked


def test_new_commit_on_main_is_local_first(publish, olah: OlahServer, network_guard: NetworkGuard,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Local first: once ``main`` is cached, ``hf-hub:ORG/NAME`` (or ``@main``) loads the cached commit with no
    network call, even after main has moved on the Hub. ``zoo fetch`` asks the Hub and moves the cached
    ``main``; a pinned sha always gets exactly that commit."""
    old = publish(seed=1)
    assert zoo.load(f"hf-hub:{old.repo_id}").pretrained_info["revision"] == old.sha
    new = publish(seed=2, repo=old.repo)

    with network_guard.block_all():
        stale = zoo.load(f"hf-hub:{old.repo_id}@main")
    assert stale.pretrained_info["revision"] == old.sha and same_weights(stale, old.model)

    pinned = zoo.load(f"hf-hub:{old.repo_id}@{new.sha}")
    assert pinned.pretrained_info["revision"] == new.sha and same_weights(pinned, new.model)

    assert main(["fetch", f"hf-hub:{old.repo_id}"]) == 0
    assert capsys.readouterr().out.strip() == f"{old.repo_id}@{new.sha}: {cached_snapshot(old.repo_id, new.sha)}"
    with network_guard.block_all():
        fresh = zoo.load(f"hf-hub:{old.repo_id}")
    assert fresh.pretrained_info["revision"] == new.sha and same_weights(fresh, new.model)


# -- errors ----------------------------------------------------------------------------------------


def test_missing_repo(olah: OlahServer) -> None:
    with pytest.raises(HubUnavailableError) as info:
        zoo.load("hf-hub:org/no-such-repo")
    message = assert_clear_unavailable(info.value, "org/no-such-repo@main")
    assert f"download of org/no-such-repo@main from {ENDPOINT}: repository, file or revision not found" in message
    assert "hf auth login" in message


def test_missing_weights_file(publish, tmp_path: Path) -> None:
    pub = publish()
    pub.repo.commit({}, "remove the weights", delete=("model.safetensors",))
    with pytest.raises(HubUnavailableError) as info:
        zoo.load(f"hf-hub:{pub.repo_id}")
    message = assert_clear_unavailable(info.value, f"{pub.repo_id}@main")
    assert f"download of {pub.repo_id}@main: the repo has no model.safetensors" in message


def test_missing_revision(publish) -> None:
    pub = publish()
    with pytest.raises(HubUnavailableError) as info:
        zoo.load(f"hf-hub:{pub.repo_id}@no-such-branch")
    message = assert_clear_unavailable(info.value, f"{pub.repo_id}@no-such-branch")
    # olah answers 401 "repo not found" where the Hub says 404 RevisionNotFound: zoo covers both.
    assert re.search(rf"download of {re.escape(pub.repo_id)}@no-such-branch from {re.escape(ENDPOINT)}: "
                     r"(revision 'no-such-branch' not found|repository, file or revision not found)", message), message


def test_corrupt_weights_name_the_file(publish) -> None:
    pub = publish()
    good = (pub.folder / "model.safetensors").read_bytes()
    sha = pub.repo.commit({"model.safetensors": good[: len(good) // 2]}, "truncated weights")
    with pytest.raises(CheckpointError) as info:
        zoo.load(f"hf-hub:{pub.repo_id}")
    assert not isinstance(info.value, HubUnavailableError)
    message = str(info.value)
    assert f"cannot read weights from {cached_snapshot(pub.repo_id, sha) / 'model.safetensors'}" in message
    assert "corrupt or truncated" in message


# -- offline and outages ---------------------------------------------------------------------------


def test_local_files_only(publish, olah: OlahServer, network_guard: NetworkGuard) -> None:
    cached = publish("cached")
    uncached = publish("uncached")
    zoo.load(f"hf-hub:{cached.repo_id}")
    with network_guard.block_all():
        model = zoo.load(f"hf-hub:{cached.repo_id}", local_files_only=True)
        assert same_weights(model, cached.model) and model.pretrained_info["revision"] == cached.sha
        start = time.monotonic()
        with pytest.raises(HubUnavailableError) as info:
            zoo.load(f"hf-hub:{uncached.repo_id}", local_files_only=True)
        elapsed = time.monotonic() - start
    assert elapsed < 5, f"an offline miss took {elapsed:.1f} s"
    message = assert_clear_unavailable(info.value, f"{uncached.repo_id}@main")
    assert "skipped (offline: HF_HUB_OFFLINE=1 or local_files_only=True)" in message
    assert "unset HF_HUB_OFFLINE" in message
    assert not olah_hits(olah, uncached.repo_id)


OFFLINE_SCRIPT = """
import json, sys, time
import torch
import zoo
from zoo.cli import main
from zoo.hub import HubUnavailableError

cached, uncached = sys.argv[1], sys.argv[2]
model = zoo.load(f"hf-hub:{cached}")
out = {"revision": model.pretrained_info["revision"],
       "weights": {k: v.tolist() for k, v in model.state_dict().items()}}
start = time.monotonic()
try:
    zoo.load(f"hf-hub:{uncached}")
except HubUnavailableError as err:
    out["error"] = str(err)
out["elapsed"] = time.monotonic() - start
out["fetch_cached"] = main(["fetch", f"hf-hub:{cached}"])
out["fetch_uncached"] = main(["fetch", f"hf-hub:{uncached}"])
print("RESULT " + json.dumps(out))
"""


def test_hf_hub_offline_in_a_subprocess(publish, olah: OlahServer) -> None:
    cached = publish("cached")
    uncached = publish("uncached")
    zoo.load(f"hf-hub:{cached.repo_id}")
    requests_before = len(olah.requests())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(OFFLINE_SCRIPT), cached.repo_id, uncached.repo_id],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    line = next(s for s in result.stdout.splitlines() if s.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["revision"] == cached.sha
    expected = {k: v.tolist() for k, v in cached.model.state_dict().items()}
    assert out["weights"] == expected
    assert out["elapsed"] < 5
    assert "skipped (offline: HF_HUB_OFFLINE=1 or local_files_only=True)" in out["error"]
    assert f"for {uncached.repo_id}@main: not cached" in out["error"]
    assert out["fetch_cached"] == 0 and out["fetch_uncached"] == 2
    assert f"{cached.repo_id}@{cached.sha}: {cached_snapshot(cached.repo_id, cached.sha)}" in result.stdout
    assert "zoo: error: no usable copy of the model was found" in result.stderr
    assert len(olah.requests()) == requests_before, "offline mode must not contact the Hub"


def test_hub_down(publish, olah: OlahServer) -> None:
    """With the server stopped (connection refused), a cached model loads; an uncached one fails quickly and
    clearly; ``zoo fetch`` of a cached branch falls back to the cached commit."""
    cached = publish("cached")
    uncached = publish("uncached")
    zoo.load(f"hf-hub:{cached.repo_id}")
    olah.stop()
    try:
        assert not olah.answers()
        model = zoo.load(f"hf-hub:{cached.repo_id}")
        assert same_weights(model, cached.model) and model.pretrained_info["revision"] == cached.sha
        start = time.monotonic()
        with pytest.raises(HubUnavailableError) as info:
            zoo.load(f"hf-hub:{uncached.repo_id}")
        elapsed = time.monotonic() - start
        assert elapsed < 10, f"an unreachable Hub took {elapsed:.1f} s to report"
        message = assert_clear_unavailable(info.value, f"{uncached.repo_id}@main")
        assert f"download of {uncached.repo_id}@main from {ENDPOINT}: the Hub could not be reached" in message
        assert "run `zoo fetch NAME` once the Hub is reachable" in message
    finally:
        olah.start()
    assert zoo.load(f"hf-hub:{uncached.repo_id}").pretrained_info["revision"] == uncached.sha


# -- a registered checkpoint published on the Hub ---------------------------------------------------


@pytest.fixture
def hub_checkpoint(publish):
    """A plugin registering ``hub-tiny-vae`` at a pinned commit of a repo whose main has moved on since."""
    pinned = publish(seed=1)
    later = publish(seed=2, repo=pinned.repo)
    plugin = types.ModuleType("zoo_hub_test_plugin")

    @zoo.hookimpl
    def zoo_register_checkpoints(register):
        register(zoo.CheckpointRef(name="hub-tiny-vae", variant="vae", hub_repo=pinned.repo_id, revision=pinned.sha,
                                   dataset="none", description="a tiny VAE for the Hub tests"))

    plugin.zoo_register_checkpoints = zoo_register_checkpoints
    zoo.register_plugin(plugin, name="hub-test-plugin")
    try:
        yield pinned, later
    finally:
        zoo.unregister_plugin("hub-test-plugin")
    assert "hub-tiny-vae" not in zoo.list_checkpoints()


def test_registered_checkpoint_fetch_and_load(hub_checkpoint, network_guard: NetworkGuard,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pinned, later = hub_checkpoint
    assert "hub-tiny-vae" in zoo.list_checkpoints()
    assert main(["fetch", "hub-tiny-vae"]) == 0
    snapshot = cached_snapshot(pinned.repo_id, pinned.sha)
    assert capsys.readouterr().out.strip() == f"{pinned.repo_id}@{pinned.sha}: {snapshot}"
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    with network_guard.block_all():  # fetched: loads with no network, at the pinned commit, not main's
        model = zoo.load("hub-tiny-vae")
        random = zoo.load("hub-tiny-vae", pretrained=False)
    assert same_weights(model, pinned.model) and not same_weights(model, later.model)
    assert model.pretrained_info == {"source": "hf-hub", "path": str(snapshot), "name": "hub-tiny-vae",
                                     "repo_id": pinned.repo_id, "revision": pinned.sha}
    assert model.variant_name == random.variant_name == "vae"
    assert model.config == random.config
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in random.state_dict().items()}
    assert not same_weights(model, random)


def test_registered_checkpoint_loads_on_demand(hub_checkpoint) -> None:
    pinned, _ = hub_checkpoint
    model = zoo.load("hub-tiny-vae")  # not cached yet: downloaded at the pinned sha
    assert model.pretrained_info["revision"] == pinned.sha and same_weights(model, pinned.model)


# -- uploads ---------------------------------------------------------------------------------------


def test_push_folder_with_the_cli(olah: OlahServer, hub_write_server, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import ModelCard, hf_hub_download

    model = tiny_model(seed=7)
    folder = tmp_path / "to-push"
    model.save_pretrained(folder)
    repo_id = "org/pushed"
    assert main(["push", str(folder), "--repo-id", repo_id, "--endpoint", hub_write_server.url]) == 0
    out = capsys.readouterr().out
    match = re.fullmatch(rf"pushed {re.escape(str(folder))} to {repo_id}: commit ([0-9a-f]{{40}}) "
                         rf"\({re.escape(hub_write_server.url)}/{repo_id}/commit/\1\)\n", out)
    assert match, out
    oid = match[1]
    assert olah.repo(repo_id).sha("main") == oid

    loaded = zoo.load(f"hf-hub:{repo_id}")  # read back through olah
    assert loaded.pretrained_info["revision"] == oid
    assert same_weights(loaded, model)
    snapshot = cached_snapshot(repo_id, oid)
    assert (snapshot / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert (snapshot / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    readme = Path(hf_hub_download(repo_id, "README.md", revision=oid))
    assert readme.read_bytes() == (folder / "README.md").read_bytes()
    card = ModelCard.load(repo_id)
    assert card.data.library_name == "ae-zoo" and "vae" in card.data.tags

    # Pushing the same folder again changes nothing: the client sees every file unchanged.
    assert main(["push", str(folder), "--repo-id", repo_id, "--endpoint", hub_write_server.url]) == 0
    assert f"commit {oid}" in capsys.readouterr().out
    assert olah.repo(repo_id).sha("main") == oid

    routes = {(method, re.sub(r"/org/[^/]+/", "/ORG/NAME/", path.split("?")[0]))
              for method, path in hub_write_server.requests}
    assert {("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
            ("POST", "/api/models/ORG/NAME/preupload/main"), ("POST", "/api/models/ORG/NAME/commit/main"),
            ("GET", "/api/models/ORG/NAME/revision/main")} <= routes
    assert hub_write_server.unknown == []

    # A folder without weights is refused before any request.
    (folder / "model.safetensors").unlink()
    assert main(["push", str(folder), "--repo-id", repo_id, "--endpoint", hub_write_server.url]) == 2
    assert f"zoo: error: {folder} is not a model folder: missing model.safetensors" in capsys.readouterr().err


def test_model_push_to_hub(olah: OlahServer, hub_write_server) -> None:
    from huggingface_hub import hf_hub_download

    model = tiny_model(seed=8)
    info = model.push_to_hub("org/pushed2", endpoint=hub_write_server.url, commit_message="first version")
    assert re.fullmatch(r"[0-9a-f]{40}", info.oid)
    assert "first version" in subprocess.run(["git", "-C", str(olah.repo("org/pushed2").path), "log", "-1",
                                              "--format=%s", info.oid], capture_output=True, text=True).stdout
    loaded = zoo.load(f"hf-hub:org/pushed2@{info.oid}")
    assert same_weights(loaded, model)
    assert Path(hf_hub_download("org/pushed2", "README.md", revision=info.oid)).read_text() == default_card(model)
    assert hub_write_server.unknown == []

    # A second version on main: a new commit whose parent is the first; both stay loadable by sha.
    torch.manual_seed(9)
    retrained = zoo.create("vae", **TINY)
    second = retrained.push_to_hub("org/pushed2", endpoint=hub_write_server.url)
    assert second.oid != info.oid
    assert olah.repo("org/pushed2").sha(f"{second.oid}~1") == info.oid
    assert same_weights(zoo.load(f"hf-hub:org/pushed2@{second.oid}"), retrained)
    assert same_weights(zoo.load(f"hf-hub:org/pushed2@{info.oid}"), model)

"""Plugin discovery through the ``zoo.plugins`` entry-point group, and the errors users see.

Third-party plugins are simulated with real (fake) installed distributions: a ``*.dist-info``
folder with ``METADATA`` and ``entry_points.txt`` on ``sys.path``, found by importlib.metadata
exactly as a pip-installed package would be.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import types
from importlib.metadata import entry_points
from pathlib import Path

import pluggy
import pytest

import zoo
from zoo.errors import ConfigError, DuplicateNameError, PluginLoadError, UnknownNameError
from zoo.plugins import ENTRY_POINT_GROUP, get_registry

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_VARIANTS = {"ae", "overcomplete-ae", "dae", "sae", "cae", "vae", "beta-vae", "cvae"}
PLUGIN_ENV = ("ZOO_PLUGINS", "ZOO_DISABLE_PLUGINS", "ZOO_STRICT_PLUGINS")


def plugin_modules() -> list[str]:
    return sorted(p.stem for p in (ROOT / "plugins").glob("*.py") if p.name != "__init__.py")


@pytest.fixture(autouse=True)
def clean_plugin_env(monkeypatch):
    """Each test starts from the environment's plugin settings unset and leaves the registry fresh."""
    for var in PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    zoo.reload_plugins()
    yield
    monkeypatch.undo()
    zoo.reload_plugins()


class FakeInstall:
    """Writes fake installed distributions into one sys.path folder."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def add(self, dist: str, entry_points_: dict[str, str], modules: dict[str, str],
            version: str = "0.1") -> None:
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points_.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        importlib.invalidate_caches()

    def cleanup(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


@pytest.fixture
def fake_install(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    install = FakeInstall(site, monkeypatch)
    yield install
    monkeypatch.undo()  # sys.path and environment back before the registry is rebuilt
    install.cleanup()
    zoo.reload_plugins()
    assert not any(f.distribution.startswith("fake-") for f in get_registry().failures)


BROKEN_MODULE = 'raise RuntimeError("fake plugin exploded on import")\n'


@pytest.fixture
def broken_plugin(fake_install):
    fake_install.add("fake-broken-plugin", {"broken": "fake_broken_module"},
                     {"fake_broken_module": BROKEN_MODULE})
    return fake_install


# -- the built-in plugins are ordinary entry points ------------------------------------------------


def test_every_plugin_module_is_declared_in_pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = data["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert data["tool"]["setuptools"]["package-dir"]["zoo_plugins"] == "plugins"
    modules = plugin_modules()
    assert {"autoencoders", "vae", "cvae"} <= set(modules)
    for module in modules:
        assert f"zoo_plugins.{module}" in declared.values(), f"plugins/{module}.py has no entry point"
    for name, target in declared.items():
        assert target.startswith("zoo_plugins."), (name, target)
        assert (ROOT / "plugins" / f"{target.split('.', 1)[1]}.py").is_file(), (name, target)


def test_every_plugin_module_is_an_installed_entry_point_of_ae_zoo():
    installed = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist.name == "ae-zoo"}
    missing = [m for m in plugin_modules() if f"zoo_plugins.{m}" not in installed]
    assert not missing, f"not in the installed metadata (reinstall with `pip install -e .`): {missing}"
    registry = get_registry()
    loaded = {info.module for info in registry.plugins if info.distribution == "ae-zoo"}
    assert {f"zoo_plugins.{m}" for m in plugin_modules()} <= loaded
    assert not [f for f in registry.failures if f.distribution == "ae-zoo"]
    assert set(registry.variants) >= BUILTIN_VARIANTS
    assert registry.variant_plugin["vae"] == "vae" and registry.variant_plugin["ae"] == "autoencoders"


# -- broken and filtered third-party plugins -------------------------------------------------------


def test_broken_plugin_is_reported_not_fatal(broken_plugin):
    registry = zoo.reload_plugins()
    (failure,) = [f for f in registry.failures if f.name == "broken"]
    assert failure.distribution == "fake-broken-plugin"
    assert failure.version == "0.1"
    assert "RuntimeError" in failure.error and "fake plugin exploded on import" in failure.error
    assert "fake_broken_module" in failure.traceback
    assert set(zoo.list_variants()) >= BUILTIN_VARIANTS
    assert "broken" not in {p.name for p in registry.plugins}


def test_strict_mode_raises_naming_the_plugin(broken_plugin, monkeypatch):
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError) as info:
        zoo.reload_plugins()
    message = str(info.value)
    assert "'broken'" in message and "fake-broken-plugin" in message
    assert "fake plugin exploded on import" in message
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("blocked", ["fake-broken-plugin", "broken", "other, fake-broken-plugin"])
def test_block_list_skips_the_plugin(broken_plugin, monkeypatch, blocked):
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", blocked)
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")  # would raise if the plugin were still loaded
    registry = zoo.reload_plugins()
    assert registry.failures == []
    assert set(registry.variants) >= BUILTIN_VARIANTS


def test_allow_list_loads_only_the_named_distribution(broken_plugin, monkeypatch):
    baseline = zoo.reload_plugins()
    assert any(f.distribution == "fake-broken-plugin" for f in baseline.failures)
    dist_of = {p.name: p.distribution for p in baseline.plugins}
    builtin = {v for v, plugin in baseline.variant_plugin.items() if dist_of[plugin] == "ae-zoo"}
    assert builtin >= BUILTIN_VARIANTS
    monkeypatch.setenv("ZOO_PLUGINS", "ae-zoo")
    registry = zoo.reload_plugins()
    assert registry.failures == []
    assert {p.distribution for p in registry.plugins} == {"ae-zoo"}
    assert set(registry.variants) == builtin
    # an allow-list of entry-point names: only those plugins
    monkeypatch.setenv("ZOO_PLUGINS", "autoencoders")
    registry = zoo.reload_plugins()
    assert [p.name for p in registry.plugins] == ["autoencoders"]
    assert set(registry.variants) == {"ae", "overcomplete-ae", "dae", "sae", "cae"}


def test_a_working_third_party_plugin_is_discovered(fake_install):
    fake_install.add("fake-good-plugin", {"good": "fake_good_module"}, {"fake_good_module": """
        from dataclasses import dataclass

        import zoo
        from zoo_plugins.vae import VAEVariant

        class TinyVAE(VAEVariant):
            name = "tiny-vae"

        @zoo.hookimpl
        def zoo_register_variants(register):
            register(TinyVAE())
    """})
    registry = zoo.reload_plugins()
    assert "tiny-vae" in zoo.list_variants()
    assert registry.variant_plugin["tiny-vae"] == "good"
    (info,) = [p for p in registry.plugins if p.name == "good"]
    assert (info.distribution, info.version, info.variants) == ("fake-good-plugin", "0.1", ["tiny-vae"])
    model = zoo.create("tiny-vae", input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,))
    assert model.variant_name == "tiny-vae"


# -- duplicates, invalid names and misspelled hooks ------------------------------------------------

DUPLICATE_VAE = """
    import zoo
    from zoo_plugins.vae import VAEVariant

    @zoo.hookimpl
    def zoo_register_variants(register):
        register(VAEVariant())
"""


def test_duplicate_variant_from_an_installed_plugin_names_both(fake_install):
    fake_install.add("fake-dup-plugin", {"dup": "fake_dup_module"}, {"fake_dup_module": DUPLICATE_VAE})
    with pytest.raises(DuplicateNameError) as info:
        zoo.reload_plugins()
    message = str(info.value)
    assert "'vae'" in message
    assert "'dup'" in message and "fake-dup-plugin" in message
    assert "ae-zoo" in message
    assert "ZOO_DISABLE_PLUGINS" in message


def test_duplicate_variant_from_register_plugin_names_both():
    plugin = types.ModuleType("my_dup_plugin")
    exec(textwrap.dedent(DUPLICATE_VAE), plugin.__dict__)
    try:
        with pytest.raises(DuplicateNameError) as info:
            zoo.register_plugin(plugin, name="my-dup")
        message = str(info.value)
        assert "variant 'vae'" in message
        assert "plugin 'vae'" in message and "plugin 'my-dup'" in message
    finally:
        zoo.unregister_plugin("my-dup")
    assert set(zoo.list_variants()) >= BUILTIN_VARIANTS


MINE = """
    import zoo
    from zoo_plugins.vae import VAEVariant

    class Mine(VAEVariant):
        name = "mine"

    @zoo.hookimpl
    def zoo_register_variants(register):
        register(Mine())
"""


def test_register_plugin_in_process_and_unregister():
    plugin = types.ModuleType("my_tiny_plugin")
    exec(textwrap.dedent(MINE), plugin.__dict__)
    try:
        registry = zoo.register_plugin(plugin, name="mine-plugin")
        assert registry.variant_plugin["mine"] == "mine-plugin"
        assert "mine" in zoo.list_variants()
    finally:
        zoo.unregister_plugin("mine-plugin")
    assert "mine" not in zoo.list_variants()


def test_registering_a_plugin_again_replaces_it_and_unknown_names_are_refused():
    first, second = (types.ModuleType("my_tiny_plugin") for _ in range(2))
    exec(textwrap.dedent(MINE), first.__dict__)
    exec(textwrap.dedent(MINE.replace('"mine"', '"mine-v2"')), second.__dict__)
    try:
        zoo.register_plugin(first)  # named after the module: my_tiny_plugin
        registry = zoo.register_plugin(second)  # a notebook cell run again, edited
        assert not registry.failures
        assert "mine-v2" in zoo.list_variants() and "mine" not in zoo.list_variants()
    finally:
        zoo.unregister_plugin("my_tiny_plugin")
    assert "mine-v2" not in zoo.list_variants()
    with pytest.raises(zoo.errors.UnknownNameError, match="unknown in-process plugin 'my_tiny_plugin'"):
        zoo.unregister_plugin("my_tiny_plugin")


def test_invalid_variant_name_is_a_reported_failure(fake_install):
    fake_install.add("fake-badname-plugin", {"badname": "fake_badname_module"}, {"fake_badname_module": """
        from dataclasses import dataclass

        import zoo

        @dataclass
        class Cfg:
            size: int = 1

        class Bad(zoo.Variant):
            name = "Bad_Name"
            config_class = Cfg

        @zoo.hookimpl
        def zoo_register_variants(register):
            register(Bad())
    """})
    registry = zoo.reload_plugins()
    (failure,) = [f for f in registry.failures if f.name == "badname"]
    assert failure.distribution == "fake-badname-plugin"
    assert "Bad_Name" in failure.error and "ConfigError" in failure.error
    assert "Bad_Name" not in registry.variants
    assert set(registry.variants) >= BUILTIN_VARIANTS


def test_registering_a_non_variant_is_a_reported_failure(fake_install):
    fake_install.add("fake-wrongtype-plugin", {"wrongtype": "fake_wrongtype"}, {"fake_wrongtype": """
        import zoo

        @zoo.hookimpl
        def zoo_register_variants(register):
            register("vae")
    """})
    registry = zoo.reload_plugins()
    (failure,) = [f for f in registry.failures if f.name == "wrongtype"]
    assert "TypeError" in failure.error and "Variant" in failure.error


MISSPELLED = """
    import zoo

    @zoo.hookimpl
    def zoo_register_variant(register):
        pass
"""


def test_misspelled_hook_in_process_is_a_reported_failure_and_strict_raises(monkeypatch):
    plugin = types.ModuleType("my_misspelled_plugin")
    exec(textwrap.dedent(MISSPELLED), plugin.__dict__)
    try:
        registry = zoo.register_plugin(plugin, name="misspelled")
        (failure,) = [f for f in registry.failures if f.name == "misspelled"]
        assert "PluginValidationError" in failure.error and "zoo_register_variant" in failure.error
        assert "misspelled" not in [p.name for p in registry.plugins]
        assert set(registry.variants) >= BUILTIN_VARIANTS
        monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
        with pytest.raises(PluginLoadError, match="zoo_register_variant") as info:
            zoo.reload_plugins()
        assert isinstance(info.value.__cause__, pluggy.PluginValidationError)
    finally:
        monkeypatch.delenv("ZOO_STRICT_PLUGINS", raising=False)
        zoo.unregister_plugin("misspelled")
    assert set(zoo.list_variants()) >= BUILTIN_VARIANTS


def test_misspelled_hook_in_an_installed_plugin_fails_only_that_plugin(fake_install):
    fake_install.add("fake-misspelled-plugin", {"misspelled": "fake_misspelled_module"},
                     {"fake_misspelled_module": MISSPELLED})
    registry = zoo.reload_plugins()
    (failure,) = [f for f in registry.failures if f.name == "misspelled"]
    assert failure.distribution == "fake-misspelled-plugin"
    assert "zoo_register_variant" in failure.error
    assert set(registry.variants) >= BUILTIN_VARIANTS


def test_a_plugin_failing_in_its_hook_leaves_nothing_registered(fake_install):
    fake_install.add("fake-half-plugin", {"half": "fake_half_module"}, {"fake_half_module": """
        import zoo
        from zoo_plugins.vae import VAEVariant

        class Half(VAEVariant):
            name = "half-vae"

        @zoo.hookimpl
        def zoo_register_variants(register):
            register(Half())
            raise RuntimeError("failed after registering one variant")
    """})
    registry = zoo.reload_plugins()
    (failure,) = [f for f in registry.failures if f.name == "half"]
    assert "failed after registering one variant" in failure.error
    assert "half-vae" not in registry.variants
    assert "half" not in [p.name for p in registry.plugins]


# -- unknown names ---------------------------------------------------------------------------------


def test_unknown_variant_suggests_close_matches():
    with pytest.raises(LookupError) as info:
        zoo.get_variant("vea")
    err = info.value
    assert isinstance(err, UnknownNameError)
    assert not isinstance(err, KeyError)
    message = str(err)
    assert not message.startswith(("'", '"'))  # not a quoted KeyError repr
    assert "'vea'" in message
    did_you_mean = message.split("Did you mean:")[1].split("?")[0]
    assert "vae" in [name.strip() for name in did_you_mean.split(",")]
    installed = message.split("Known variants:")[1]
    for name in zoo.list_variants():
        assert name in installed
    assert "vae" in err.close_matches
    with pytest.raises(UnknownNameError):
        zoo.create("no-such-thing")


def test_misspelled_config_key_suggests_the_right_one():
    with pytest.raises(ConfigError) as info:
        zoo.create("vae", latnet_dim=3)
    message = str(info.value)
    assert "'latnet_dim'" in message
    assert "did you mean 'latent_dim'" in message
    assert "latent_dim" in message.split("Valid keys:")[1]


def test_loading_a_path_without_prefix_hints_local_dir():
    with pytest.raises(UnknownNameError) as info:
        zoo.load("some/path")
    assert "zoo.load('local-dir:some/path')" in str(info.value)
    with pytest.raises(UnknownNameError, match="local-dir:"):
        zoo.load("./runs/model")


def test_list_variants_wildcard():
    everything = zoo.list_variants()
    assert everything == sorted(everything)
    vaes = zoo.list_variants("*vae*")
    assert vaes == [name for name in everything if "vae" in name]
    assert {"vae", "beta-vae", "cvae"} <= set(vaes)
    assert "ae" not in vaes and "dae" not in vaes
    assert zoo.list_variants("?ae") == [name for name in everything if len(name) == 3 and name.endswith("ae")]
    assert zoo.list_variants("nothing-*") == []


# -- import cost -----------------------------------------------------------------------------------

HEAVY = ("timm", "torchvision", "matplotlib", "huggingface_hub")


REPORT = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
IMPORT_CHECK = f"""
import json, sys
import zoo
zoo.__version__, zoo.hookimpl
{REPORT}
zoo.list_variants()
zoo.create("vae", latent_dim=2)
{REPORT}
"""


def test_import_zoo_is_light():
    """``import zoo`` (and listing or creating models) imports none of the heavy optional libraries."""
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    after_import, after_create = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert after_import == [], f"`import zoo` imported {after_import}"
    assert after_create == [], f"zoo.list_variants() / zoo.create() imported {after_create}"


@pytest.mark.parametrize("code", ["0", "3", "'bye'"])
def test_a_plugin_that_calls_sys_exit_at_import_is_a_reported_failure(fake_install, monkeypatch, code):
    fake_install.add("fake-exiting-plugin", {"exiting": "fake_exiting_module"},
                     {"fake_exiting_module": f"import sys\nsys.exit({code})\n"})
    registry = zoo.reload_plugins()  # the process goes on
    (failure,) = [f for f in registry.failures if f.name == "exiting"]
    assert failure.distribution == "fake-exiting-plugin"
    assert failure.error == f"SystemExit: the plugin called sys.exit({code}) while loading"
    assert set(registry.variants) >= BUILTIN_VARIANTS
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match=r"plugin 'exiting' \(fake-exiting-plugin 0\.1\) failed to load: "
                                              r"SystemExit: the plugin called sys\.exit"):
        zoo.reload_plugins()

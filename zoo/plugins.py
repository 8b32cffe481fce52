"""Discover plugins through the ``zoo.plugins`` entry-point group and collect what they register.

Built-in variants are entry points of ae-zoo's own distribution, so they go through exactly the
path a third-party package does. pluggy validates hooks against the spec; this module guards what
pluggy does not: a plugin that fails to import, has a misspelled hook or raises in its hook is
reported and skipped (with whatever it registered), never fatal unless strict; duplicate names are
fatal and name both plugins; order is deterministic; allow/block lists come from the environment.

Environment:
    ZOO_PLUGINS          comma-separated allow-list of distribution or entry-point names
                         (unset: load all).
    ZOO_DISABLE_PLUGINS  comma-separated block-list, same names.
    ZOO_STRICT_PLUGINS   "1": a plugin that fails to load raises PluginLoadError (for CI).
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.checkpoints import CheckpointRef
from zoo.errors import DuplicateNameError, PluginLoadError, UnknownNameError
from zoo.samplers import Sampler
from zoo.variant import Variant

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "zoo.plugins"


@dataclass
class PluginInfo:
    """One loaded plugin and what it registered."""

    name: str
    distribution: str
    version: str
    module: str
    variants: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    samplers: list[str] = field(default_factory=list)


#: The ``distribution`` of a plugin object passed to :func:`register_plugin` (no installed package).
IN_PROCESS = "registered in process"


def origin(distribution: str, version: str) -> str:
    """Where a plugin comes from, for messages: ``"zoo-wae 0.1.0"`` or ``"registered in process"``."""
    return f"{distribution} {version}".strip()


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    distribution: str
    version: str
    error: str
    traceback: str


@dataclass
class Registry:
    """Everything the loaded plugins registered, in sorted order."""

    plugins: list[PluginInfo]
    failures: list[PluginFailure]
    variants: dict[str, Variant]
    checkpoints: dict[str, CheckpointRef]
    variant_plugin: dict[str, str]
    checkpoint_plugin: dict[str, str]
    samplers: dict[str, Sampler] = field(default_factory=dict)
    sampler_plugin: dict[str, str] = field(default_factory=dict)


_registry: Registry | None = None
_manual: list[tuple[str, Any]] = []


def get_registry() -> Registry:
    """The registry, built on first use (so ``import zoo`` stays cheap)."""
    global _registry
    if _registry is None:
        _registry = _build_registry()
    return _registry


def reload_plugins() -> Registry:
    """Discover plugins again (after installing or uninstalling one in this process)."""
    global _registry
    _registry = None
    return get_registry()


def register_plugin(plugin: ModuleType | object, name: str | None = None) -> Registry:
    """Register a plugin object in this process without packaging it (notebooks, tests).

    The object (usually a module) implements hooks with ``@zoo.hookimpl`` like an installed plugin. Its
    name is ``name`` or the module's ``__name__``; registering a name again replaces the earlier object
    (a notebook cell run twice), so it is safe to repeat.
    """
    key = name or getattr(plugin, "__name__", repr(plugin))
    _manual[:] = [(n, p) for n, p in _manual if n != key] + [(key, plugin)]
    return reload_plugins()


def unregister_plugin(name: str) -> Registry:
    """Undo :func:`register_plugin` for ``name`` (the name it was registered under)."""
    if name not in {n for n, _ in _manual}:
        raise UnknownNameError("in-process plugin", name, [n for n, _ in _manual],
                               "Only plugins registered with zoo.register_plugin can be unregistered; uninstall "
                               "an installed one or block it with ZOO_DISABLE_PLUGINS.")
    _manual[:] = [(n, p) for n, p in _manual if n != name]
    return reload_plugins()


def _env_list(var: str) -> set[str]:
    return {item.strip() for item in os.environ.get(var, "").split(",") if item.strip()}


def _selected(ep: EntryPoint, dist: str, allow: set[str], block: set[str]) -> bool:
    names = {ep.name, dist}
    if names & block:
        return False
    return not allow or bool(names & allow)


def _build_registry() -> Registry:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    strict = os.environ.get("ZOO_STRICT_PLUGINS", "") == "1"
    allow, block = _env_list("ZOO_PLUGINS"), _env_list("ZOO_DISABLE_PLUGINS")
    infos: dict[str, PluginInfo] = {}
    failures: list[PluginFailure] = []

    def fail(name: str, dist: str, version: str, err: BaseException) -> None:
        failure = PluginFailure(name, dist, version, f"{type(err).__name__}: {err}", traceback.format_exc())
        if strict:
            raise PluginLoadError(
                f"plugin {name!r} ({origin(dist, version)}) failed to load: {failure.error} "
                f"(ZOO_STRICT_PLUGINS=1 makes this fatal)"
            ) from err
        logger.warning("zoo plugin %r (%s) failed to load: %s", name, origin(dist, version), failure.error)
        failures.append(failure)

    def add(name: str, load: Callable[[], Any], dist: str, version: str, module: str) -> None:
        """Register one plugin; an import error or a misspelled hook fails this plugin only."""
        try:
            pm.register(load(), name=name)
            pm.check_pending()
        except (Exception, SystemExit) as err:  # a broken plugin must not take the zoo (or the process) down
            if pm.has_plugin(name):
                pm.unregister(name=name)
            fail(name, dist, version, _exit_as_failure(err))
            return
        infos[name] = PluginInfo(name, dist, version, module)

    # Deduplicate entry points (the same distribution can be visible twice on sys.path).
    eps = {(ep.name, ep.value): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for ep in sorted(eps.values(), key=lambda e: (e.name, e.value)):
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else ""
        if _selected(ep, dist, allow, block):
            add(ep.name, lambda ep=ep: ep.load(), dist, version, ep.value)
    for name, plugin in _manual:
        add(name, lambda plugin=plugin: plugin, IN_PROCESS, "",
            getattr(plugin, "__name__", repr(plugin)))

    variants: dict[str, Variant] = {}
    variant_plugin: dict[str, str] = {}
    checkpoints: dict[str, CheckpointRef] = {}
    checkpoint_plugin: dict[str, str] = {}
    samplers: dict[str, Sampler] = {}
    sampler_plugin: dict[str, str] = {}

    def drop(plugin_name: str) -> None:
        """Forget a plugin whose hook failed, with everything it had registered."""
        for store, owner in ((variants, variant_plugin), (checkpoints, checkpoint_plugin), (samplers, sampler_plugin)):
            for key in [k for k, o in owner.items() if o == plugin_name]:
                del store[key], owner[key]
        pm.unregister(name=plugin_name)
        del infos[plugin_name]

    def collect(hook_name: str, expected: type, store: dict, owner: dict, kind: str) -> None:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin_name = impl.plugin_name
            info = infos[plugin_name]

            def register(obj: Any, _plugin: str = plugin_name, _info: PluginInfo = info) -> None:
                if not isinstance(obj, expected):
                    raise TypeError(f"plugin {_plugin!r} registered {obj!r}, expected a {expected.__name__}")
                if isinstance(obj, (Variant, Sampler)):
                    obj.validate()
                key = obj.name
                if key in store:
                    raise DuplicateNameError(
                        f"{kind} {key!r} is registered twice: by plugin {owner[key]!r} "
                        f"({infos[owner[key]].distribution}) and by plugin {_plugin!r} ({_info.distribution}). "
                        f"Uninstall one of them or block it with ZOO_DISABLE_PLUGINS."
                    )
                store[key] = obj
                owner[key] = _plugin
                getattr(_info, f"{kind}s").append(key)

            try:
                impl.function(register=register)
            except DuplicateNameError:
                raise
            except (Exception, SystemExit) as err:
                drop(plugin_name)
                fail(plugin_name, info.distribution, info.version, _exit_as_failure(err))

    collect("zoo_register_variants", Variant, variants, variant_plugin, "variant")
    collect("zoo_register_checkpoints", CheckpointRef, checkpoints, checkpoint_plugin, "checkpoint")
    collect("zoo_register_samplers", Sampler, samplers, sampler_plugin, "sampler")
    return Registry(
        plugins=sorted(infos.values(), key=lambda i: i.name),
        failures=failures,
        variants=dict(sorted(variants.items())),
        checkpoints=dict(sorted(checkpoints.items())),
        variant_plugin=variant_plugin,
        checkpoint_plugin=checkpoint_plugin,
        samplers=dict(sorted(samplers.items())),
        sampler_plugin=sampler_plugin,
    )


def _exit_as_failure(err: BaseException) -> BaseException:
    """A plugin's ``sys.exit()`` as a failure that says so (``SystemExit: 3`` alone names nothing)."""
    if isinstance(err, SystemExit):
        return SystemExit(f"the plugin called sys.exit({err.code!r}) while loading")
    return err

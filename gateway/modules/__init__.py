"""Pluggable modules: Python classes named in the ``modules`` config, given their config
and a :class:`ModuleApi`, registering callbacks with the same names and meaning as
Synapse's (spam checker, third-party rules, account validity, password auth providers)
and web resources under ``/_synapse/client/``.

A Synapse module ports by importing from here instead of ``synapse.module_api``
(``from gateway.modules import ModuleApi, NOT_SPAM``; ``from gateway.modules.errors
import Codes``) and by serving aiohttp handlers instead of Twisted resources.
See docs/modules.md.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from .api import ModuleApi
from .callbacks import NOT_SPAM, ModuleCallbackError, ModuleCallbacks, RegistrationBehaviour
from .event import ModuleEvent

if TYPE_CHECKING:
    from ..config.modules import ModuleConfig
    from ..server import HomeServer

__all__ = ["NOT_SPAM", "LoadedModules", "ModuleApi", "ModuleCallbacks", "ModuleEvent", "ProfileInfo",
           "RegistrationBehaviour", "load_modules"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileInfo:
    """A profile as ``on_profile_update`` sees it."""

    display_name: str | None
    avatar_url: str | None


@dataclass
class LoadedModules:
    instances: list[Any] = field(default_factory=list)
    callbacks: ModuleCallbacks = field(default_factory=ModuleCallbacks)
    #: path -> aiohttp handler or Application
    web_resources: dict[str, Any] = field(default_factory=dict)


def load_modules(hs: "HomeServer", configs: Sequence["ModuleConfig"],
                 into: LoadedModules | None = None) -> LoadedModules:
    """Import and start each configured module, in order (into ``into`` if given, whose
    callbacks the services already hold). Errors name the config key."""
    loaded = into if into is not None else LoadedModules()
    for i, mc in enumerate(configs):
        key = f"modules[{i}]"
        module_path, _, class_name = mc.module.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_path), class_name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{key}.module", f"cannot load {mc.module!r}: {e}") from None
        config: Any = mc.config
        parse = getattr(cls, "parse_config", None)
        if parse is not None:
            try:
                config = parse(dict(mc.config))
            except ConfigError as e:
                raise ConfigError(f"{key}.config", e.message) from None
            except Exception as e:
                raise ConfigError(f"{key}.config", f"{type(e).__name__}: {e}") from None
        api = ModuleApi(hs, loaded.callbacks, loaded.web_resources, mc.module)
        try:
            loaded.instances.append(cls(config, api))
        except ModuleCallbackError as e:
            raise ConfigError(key, str(e)) from None
        except Exception as e:
            raise ConfigError(key, f"module {mc.module} failed to start: {type(e).__name__}: {e}") from None
        log.info("loaded module %s", mc.module)
    return loaded

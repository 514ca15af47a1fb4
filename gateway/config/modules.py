"""The ``modules`` section: Python classes to load, each with its own config (Synapse's format).

https://element-hq.github.io/synapse/latest/modules/index.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ._values import ConfigError, Section

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class ModuleConfig:
    #: ``package.module.ClassName``
    module: str
    config: dict[str, Any] = field(default_factory=dict)


def _parse_module(item: Any, path: str) -> ModuleConfig:
    section = Section(item, path)
    module = section.str("module")
    if not _DOTTED.match(module):
        raise ConfigError(section.key("module"), f"expected a dotted path to a class (package.module.Class), got {module!r}")
    config = section.raw("config", {})
    if not isinstance(config, dict):
        raise ConfigError(section.key("config"), "expected a mapping")
    unknown = section.unknown_keys()
    if unknown:
        raise ConfigError(unknown[0], "unknown key (a module entry has 'module' and 'config')")
    return ModuleConfig(module, config)


def parse_modules(root: Section) -> tuple[ModuleConfig, ...]:
    return tuple(root.list("modules", [], of=_parse_module))

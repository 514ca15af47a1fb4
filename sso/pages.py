"""The Jinja environment for every page Gateway renders (SSO pages, the federation tester).

Templates are looked up in ``templates.custom_template_directory`` first, then in our
defaults (the ``templates`` package), one file at a time, so an operator can override a
single page. Autoescaping is on for HTML.
"""

from __future__ import annotations

import jinja2


def build_environment(custom_template_directory: str | None = None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if custom_template_directory:
        loaders.append(jinja2.FileSystemLoader(custom_template_directory))
    loaders.append(jinja2.PackageLoader("templates", "."))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=True),
    )

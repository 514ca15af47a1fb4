"""An example Gateway module: refuses events sent by users on a configured list, and serves
``/_synapse/client/list_spam_checker/is_evil?user=@u:server`` telling whether a user is on it.

Configure it with:

    modules:
      - module: list_spam_checker.ListSpamChecker
        config:
          evil_users: ["@mallory:example.com"]
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.modules import NOT_SPAM, ModuleApi, ModuleEvent
from gateway.modules.errors import Codes, ConfigError


class ListSpamChecker:
    def __init__(self, config: dict[str, Any], api: ModuleApi):
        self.api = api
        self.evil_users: set[str] = config["evil_users"]
        api.register_spam_checker_callbacks(check_event_for_spam=self.check_event_for_spam)
        api.register_web_resource("/_synapse/client/list_spam_checker/is_evil", self.is_evil)

    @staticmethod
    def parse_config(config: dict[str, Any]) -> dict[str, Any]:
        users = config.get("evil_users", [])
        if not isinstance(users, list) or not all(isinstance(u, str) and u.startswith("@") for u in users):
            raise ConfigError("'evil_users' must be a list of user IDs")
        return {"evil_users": set(users)}

    async def check_event_for_spam(self, event: ModuleEvent) -> str:
        return Codes.FORBIDDEN if event.sender in self.evil_users else NOT_SPAM

    async def is_evil(self, request: web.Request) -> web.Response:
        return web.json_response({"evil": request.query.get("user") in self.evil_users})

"""Modules the tests load: each records what it was called with and answers as configured."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.modules import NOT_SPAM, ModuleApi, RegistrationBehaviour
from gateway.modules.errors import Codes, ConfigError, SynapseError


class Recorder:
    def __init__(self, config: dict[str, Any], api: ModuleApi):
        self.config = config
        self.api = api
        self.calls: list[tuple] = []

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))

    def called(self, name: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == name]


class SpamRules(Recorder):
    """Spam checker: refuses what the config lists."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_spam_checker_callbacks(
            check_event_for_spam=self.check_event_for_spam, user_may_join_room=self.user_may_join_room,
            user_may_invite=self.user_may_invite, user_may_create_room=self.user_may_create_room,
            check_registration_for_spam=self.check_registration_for_spam,
            check_login_for_spam=self.check_login_for_spam,
            user_may_create_room_alias=self.user_may_create_room_alias,
            user_may_publish_room=self.user_may_publish_room,
        )

    async def user_may_create_room_alias(self, user_id, alias):
        self.record("user_may_create_room_alias", user_id, str(alias))
        return Codes.FORBIDDEN if "bad" in str(alias) else NOT_SPAM

    async def user_may_publish_room(self, user_id, room_id):
        self.record("user_may_publish_room", user_id, room_id)
        return Codes.FORBIDDEN if user_id in self.config.get("no_publish", []) else NOT_SPAM

    async def check_event_for_spam(self, event):
        self.record("check_event_for_spam", event.event_id, event.content.get("body"))
        body = event.content.get("body", "")
        if "spam" in body:
            return Codes.FORBIDDEN
        if "limit" in body:
            return Codes.LIMIT_EXCEEDED, {"retry_after_ms": 5}
        if "legacy" in body:
            return True
        return NOT_SPAM

    async def user_may_join_room(self, user, room, is_invited):
        self.record("user_may_join_room", user, room, is_invited)
        return Codes.FORBIDDEN if user in self.config.get("no_join", []) else NOT_SPAM

    async def user_may_invite(self, inviter, invitee, room_id):
        self.record("user_may_invite", inviter, invitee, room_id)
        return False if invitee not in self.config.get("no_invite", []) else Codes.FORBIDDEN

    async def user_may_create_room(self, user_id):
        self.record("user_may_create_room", user_id)
        return user_id in self.config.get("no_rooms", [])

    async def check_registration_for_spam(self, email, username, request_info, auth_provider_id=None):
        self.record("check_registration_for_spam", username, request_info)
        if username in self.config.get("no_register", []):
            return RegistrationBehaviour.DENY
        if username in self.config.get("shadow_ban", []):
            return RegistrationBehaviour.SHADOW_BAN
        return RegistrationBehaviour.ALLOW

    async def check_login_for_spam(self, user_id, device_id, display_name, request_info, auth_provider_id):
        self.record("check_login_for_spam", user_id, device_id)
        return Codes.FORBIDDEN if user_id in self.config.get("no_login", []) else NOT_SPAM


class SecondOpinion(Recorder):
    """Registered after SpamRules: only asked when the first module allowed."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_spam_checker_callbacks(check_event_for_spam=self.check_event_for_spam)

    async def check_event_for_spam(self, event):
        self.record("check_event_for_spam", event.event_id)
        return "Messages about cabbages are not welcome here" if "cabbage" in event.content.get("body", "") \
            else NOT_SPAM


class Rules(Recorder):
    """Third-party rules."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_third_party_rules_callbacks(
            check_event_allowed=self.check_event_allowed, on_create_room=self.on_create_room,
            on_new_event=self.on_new_event, check_can_deactivate_user=self.check_can_deactivate_user,
            check_can_shutdown_room=self.check_can_shutdown_room, on_profile_update=self.on_profile_update,
            on_user_deactivation_status_changed=self.on_user_deactivation_status_changed,
            check_visibility_can_be_modified=self.check_visibility_can_be_modified,
        )

    async def check_visibility_can_be_modified(self, room_id, state, new_visibility):
        self.record("check_visibility_can_be_modified", room_id, new_visibility)
        name = state.get(("m.room.name", ""))
        return not (name is not None and name.content.get("name") == "Secret" and new_visibility == "public")

    async def check_event_allowed(self, event, state):
        self.record("check_event_allowed", event.type, ("m.room.create", "") in state)
        body = event.content.get("body", "")
        if body == "forbidden words":
            return False, None
        if body == "shout":
            new = event.get_dict()
            new["content"] = {**new["content"], "body": "SHOUT"}
            return True, new
        return True, None

    async def on_create_room(self, requester, request_content, is_admin):
        self.record("on_create_room", requester.user_id, is_admin)
        if request_content.get("name") == "forbidden":
            raise SynapseError(403, "No such rooms here", Codes.FORBIDDEN)
        request_content["topic"] = "Set by a module"

    async def on_new_event(self, event, state):
        self.record("on_new_event", event.type, event.event_id, len(state))

    async def check_can_deactivate_user(self, user_id, by_admin):
        self.record("check_can_deactivate_user", user_id, by_admin)
        return user_id not in self.config.get("keep", [])

    async def check_can_shutdown_room(self, user_id, room_id):
        self.record("check_can_shutdown_room", user_id, room_id)
        return False

    async def on_profile_update(self, user_id, profile, by_admin, deactivation):
        self.record("on_profile_update", user_id, profile.display_name)

    async def on_user_deactivation_status_changed(self, user_id, deactivated, by_admin):
        self.record("on_user_deactivation_status_changed", user_id, deactivated, by_admin)


class Validity(Recorder):
    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_account_validity_callbacks(is_user_expired=self.is_user_expired,
                                                on_user_registration=self.on_user_registration,
                                                on_legacy_admin_request=self.on_legacy_admin_request)
        self.expires: dict[str, int] = {}

    async def is_user_expired(self, user):
        self.record("is_user_expired", user)
        if user in self.expires:
            return self.expires[user] < 2_000_000_000_000
        return True if user in self.config.get("expired", []) else None

    async def on_legacy_admin_request(self, request: web.Request) -> int:
        """The admin API's renewal: ``user_id`` and ``expiration_ts`` (default: far away)."""
        body = await request.json()
        if not isinstance(body.get("user_id"), str):
            raise SynapseError(400, "Missing property 'user_id' in the request body")
        self.expires[body["user_id"]] = body.get("expiration_ts", 4_000_000_000_000)
        return self.expires[body["user_id"]]

    async def on_user_registration(self, user):
        self.record("on_user_registration", user)


class Passwords(Recorder):
    """A password auth provider: a custom login type, passwords from its own list, 3PIDs."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_password_auth_provider_callbacks(
            auth_checkers={("com.example.pin", ("pin",)): self.check_pin,
                           ("m.login.password", ("password",)): self.check_password},
            check_3pid_auth=self.check_3pid, on_logged_out=self.on_logged_out,
            get_username_for_registration=self.username_for_registration,
            get_displayname_for_registration=self.displayname_for_registration,
        )

    async def check_pin(self, user, login_type, login_dict):
        self.record("check_pin", user, login_dict)
        if login_dict["pin"] == "1234":
            user_id = self.api.get_qualified_user_id(user)
            if await self.api.check_user_exists(user_id) is None:
                await self.api.register_user(user.lstrip("@").split(":")[0])

            async def after(response):
                self.record("after_login", response["user_id"])

            return user_id, after
        return None

    async def check_password(self, user, login_type, login_dict):
        self.record("check_password", user)
        return (user, None) if login_dict["password"] == "module-secret" else None

    async def check_3pid(self, medium, address, password):
        self.record("check_3pid", medium, address)
        if medium == "email" and address == "pat@example.com" and password == "mail-secret":
            return "@pat:hs.test", None
        return None

    async def on_logged_out(self, user_id, device_id, access_token):
        self.record("on_logged_out", user_id, device_id)

    async def username_for_registration(self, uia_results, params):
        self.record("get_username_for_registration", uia_results, params.get("username"))
        return "forced" if params.get("username") == "renameme" else None

    async def displayname_for_registration(self, uia_results, params):
        return "Display " + params["username"] if params.get("username") else None


class Broken(Recorder):
    """Every callback raises: operations it guards must fail safe, notifications go on."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_spam_checker_callbacks(user_may_create_room=self.boom)
        api.register_third_party_rules_callbacks(on_new_event=self.boom)
        api.register_account_validity_callbacks(on_user_registration=self.boom)

    async def boom(self, *args):
        self.record("boom", *args)
        raise RuntimeError("module bug")


class Pages(Recorder):
    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_web_resource("/_synapse/client/pages/hello", self.hello)
        sub = web.Application()
        sub.router.add_get("/status", self.status)
        api.register_web_resource("/_synapse/client/pages/app", sub)

    async def hello(self, request):
        return web.Response(text=f"hello from {self.api.server_name}")

    async def status(self, request):
        return web.json_response({"ok": True})


class SamePath(Recorder):
    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_web_resource("/_synapse/client/pages/hello", self.other)

    async def other(self, request):
        return web.Response(text="second module")


class NeedsConfig:
    @staticmethod
    def parse_config(config):
        if "colour" not in config:
            raise ConfigError("'colour' is required")
        return config

    def __init__(self, config, api):
        self.config = config


class FailsToStart:
    def __init__(self, config, api):
        raise ValueError("no database for me")


class OtherPinFields:
    def __init__(self, config, api):
        api.register_password_auth_provider_callbacks(auth_checkers={("com.example.pin", ("code",)): self.check})

    async def check(self, *args):
        return None


class FederationPolicy(Recorder):
    """Drops federated events whose body says so (``should_drop_federated_event``)."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_spam_checker_callbacks(should_drop_federated_event=self.should_drop_federated_event)

    async def should_drop_federated_event(self, event):
        self.record("should_drop_federated_event", event.event_id)
        return "drop me" in event.content.get("body", "")


class HiddenUsers(Recorder):
    """Hides users from directory searches: by display name (current two-argument form)."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_spam_checker_callbacks(check_username_for_spam=self.check_username_for_spam)

    async def check_username_for_spam(self, user_profile, requester_id):
        self.record("check_username_for_spam", dict(user_profile), requester_id)
        return "spammy" in (user_profile.get("display_name") or "")


class HiddenUsersLegacy(Recorder):
    """The older one-argument form: hides users by user ID."""

    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_spam_checker_callbacks(check_username_for_spam=self.check_username_for_spam)

    async def check_username_for_spam(self, user_profile):
        self.record("check_username_for_spam", dict(user_profile))
        return user_profile["user_id"] in self.config.get("hide", [])

"""The callbacks modules register, and how the server runs them.

Ordering follows Synapse's documented rules
(https://element-hq.github.io/synapse/latest/modules/writing_a_module.html): callbacks run in
the order of the ``modules`` list; for checks, the first callback that does not answer
"allowed" decides and the rest are skipped; notifications all run.

A callback that raises is logged and never takes the server down. A check that raises
refuses the operation it guards (fail safe); a notification that raises is skipped.
"""

from __future__ import annotations

import enum
import inspect
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..http import Codes, MatrixError

log = logging.getLogger(__name__)

#: A spam checker's "allowed" answer.
NOT_SPAM = "NOT_SPAM"

_ERRCODE = re.compile(r"^(M|ORG|IO|COM|NET)_[A-Z0-9_.]+$")


class RegistrationBehaviour(enum.Enum):
    ALLOW = "allow"
    SHADOW_BAN = "shadow_ban"
    DENY = "deny"


#: Callback names per ``register_*_callbacks`` family.
FAMILIES: dict[str, tuple[str, ...]] = {
    "spam_checker": (
        "check_event_for_spam", "user_may_join_room", "user_may_invite", "user_may_send_3pid_invite",
        "user_may_create_room", "user_may_create_room_alias", "user_may_publish_room",
        "check_username_for_spam", "check_registration_for_spam", "check_media_file_for_spam",
        "check_login_for_spam", "should_drop_federated_event",
    ),
    "third_party_rules": (
        "check_event_allowed", "on_create_room", "check_threepid_can_be_invited",
        "check_visibility_can_be_modified", "on_new_event", "check_can_shutdown_room",
        "check_can_deactivate_user", "on_profile_update", "on_user_deactivation_status_changed",
        "on_threepid_bind", "on_add_user_third_party_identifier", "on_remove_user_third_party_identifier",
    ),
    "account_validity": ("is_user_expired", "on_user_registration", "on_user_login", "on_legacy_send_mail",
                         "on_legacy_renew", "on_legacy_admin_request"),
    "password_auth_provider": ("auth_checkers", "check_3pid_auth", "on_logged_out",
                               "get_username_for_registration", "get_displayname_for_registration",
                               "is_3pid_allowed"),
}

Callback = Callable[..., Awaitable[Any]]


class ModuleCallbackError(Exception):
    pass


def _refusal(answer: Any, what: str) -> MatrixError | None:
    """A spam checker's answer as a refusal, or None when it allows the operation.

    NOT_SPAM / False allow; True refuses with M_FORBIDDEN; an error code refuses with it
    (optionally ``(code, extra_fields)``); any other string is a (deprecated) reason."""
    if answer is None or answer is False or answer == NOT_SPAM:
        return None
    if answer is True:
        return MatrixError(403, Codes.FORBIDDEN, f"{what} was refused by the server's policy")
    if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], str) and isinstance(answer[1], dict):
        return MatrixError(403, answer[0], f"{what} was refused by the server's policy", **answer[1])
    if isinstance(answer, str):
        if _ERRCODE.match(answer):
            return MatrixError(403, answer, f"{what} was refused by the server's policy")
        return MatrixError(403, Codes.FORBIDDEN, answer)
    log.warning("a module answered %r for %s; treating it as a refusal", answer, what)
    return MatrixError(403, Codes.FORBIDDEN, f"{what} was refused by the server's policy")


def _positional_count(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` takes (a large number for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 99
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _failed(what: str) -> MatrixError:
    return MatrixError(403, Codes.FORBIDDEN, f"{what} was refused: a server module failed while checking it")


class ModuleCallbacks:
    """Every callback the configured modules registered, in module order."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = defaultdict(list)
        #: (login type, fields) -> checkers, from ``auth_checkers``.
        self.auth_checkers: dict[tuple[str, tuple[str, ...]], list[Callback]] = {}

    def register(self, family: str, callbacks: Mapping[str, Any]) -> None:
        allowed = FAMILIES[family]
        for name, fn in callbacks.items():
            if fn is None:
                continue
            if name not in allowed:
                raise ModuleCallbackError(f"unknown {family} callback {name!r}")
            if name == "auth_checkers":
                self._add_auth_checkers(fn)
            else:
                self._callbacks[name].append(fn)

    def _add_auth_checkers(self, checkers: Mapping[tuple[str, tuple[str, ...]], Callback]) -> None:
        for (login_type, fields), fn in checkers.items():
            fields = tuple(fields)
            for (known_type, known_fields) in self.auth_checkers:
                if known_type == login_type and known_fields != fields:
                    raise ModuleCallbackError(
                        f"two modules check logins of type {login_type!r} with different fields"
                        f" ({list(known_fields)} and {list(fields)})")
            self.auth_checkers.setdefault((login_type, fields), []).append(fn)

    def has(self, name: str) -> bool:
        return bool(self._callbacks.get(name))

    @property
    def has_event_checks(self) -> bool:
        """Whether any module checks events as they are created (cheap test for the hot path)."""
        return self.has("check_event_for_spam") or self.has("check_event_allowed")

    # --- runners ---------------------------------------------------------------

    async def spam_check(self, name: str, what: str, *args: Any) -> None:
        """Run a spam-checker callback family member; raise the first refusal."""
        for fn in self._callbacks.get(name, ()):
            try:
                answer = await fn(*args)
            except Exception:
                log.exception("module callback %s failed", name)
                raise _failed(what) from None
            refusal = _refusal(answer, what)
            if refusal is not None:
                raise refusal

    async def all_true(self, name: str, what: str, *args: Any) -> None:
        """Checks that answer True to allow: the first other answer refuses (M_FORBIDDEN)."""
        for fn in self._callbacks.get(name, ()):
            try:
                answer = await fn(*args)
            except Exception:
                log.exception("module callback %s failed", name)
                raise _failed(what) from None
            if answer is not True:
                raise MatrixError(403, Codes.FORBIDDEN, f"{what} was refused by the server's policy")

    async def first_not_none(self, name: str, *args: Any, on_error: Any = None) -> Any:
        """The first answer that is not None (None if every callback answered None);
        ``on_error`` is the answer when a callback raises."""
        for fn in self._callbacks.get(name, ()):
            try:
                answer = await fn(*args)
            except Exception:
                log.exception("module callback %s failed", name)
                return on_error
            if answer is not None:
                return answer
        return None

    async def first_answer(self, name: str, *args: Any) -> Any:
        """The first registered callback's answer (Synapse calls one ``on_legacy_*``
        callback); a module's ``SynapseError`` is passed on to the client, anything else
        it raises becomes ModuleCallbackError."""
        for fn in self._callbacks.get(name, ())[:1]:
            try:
                return await fn(*args)
            except MatrixError:
                raise
            except Exception as e:
                log.exception("module callback %s failed", name)
                raise ModuleCallbackError(f"module callback {name} failed") from e
        return None

    async def first_true(self, name: str, *args: Any) -> bool:
        """True as soon as a callback answers True (``should_drop_federated_event``); a
        callback that raises counts as True (fail safe)."""
        for fn in self._callbacks.get(name, ()):
            try:
                if await fn(*args):
                    return True
            except Exception:
                log.exception("module callback %s failed", name)
                return True
        return False

    async def username_is_spam(self, profile: Mapping[str, Any], requester_id: str) -> bool:
        """``check_username_for_spam(user_profile, requester_id)``; callbacks written for
        the older one-argument form get the profile only. A failing callback hides the
        user (fail safe)."""
        for fn in self._callbacks.get("check_username_for_spam", ()):
            args: tuple[Any, ...] = (dict(profile), requester_id) if _positional_count(fn) >= 2 else (dict(profile),)
            try:
                if await fn(*args):
                    return True
            except Exception:
                log.exception("module callback check_username_for_spam failed")
                return True
        return False

    async def notify(self, name: str, *args: Any) -> None:
        """Run every callback; failures are logged and skipped."""
        for fn in self._callbacks.get(name, ()):
            try:
                await fn(*args)
            except Exception:
                log.exception("module callback %s failed", name)

    async def raising(self, name: str, *args: Any) -> None:
        """Callbacks that refuse by raising (``on_create_room``): a MatrixError (or
        SynapseError) is passed on; any other exception refuses with M_FORBIDDEN."""
        for fn in self._callbacks.get(name, ()):
            try:
                await fn(*args)
            except MatrixError:
                raise
            except Exception:
                log.exception("module callback %s failed", name)
                raise _failed("The request") from None

    async def registration_behaviour(self, *args: Any) -> RegistrationBehaviour:
        for fn in self._callbacks.get("check_registration_for_spam", ()):
            try:
                answer = await fn(*args)
            except Exception:
                log.exception("module callback check_registration_for_spam failed")
                return RegistrationBehaviour.DENY
            if isinstance(answer, str):
                answer = RegistrationBehaviour(answer)
            if answer is not RegistrationBehaviour.ALLOW:
                return answer
        return RegistrationBehaviour.ALLOW

    async def check_event_allowed(self, event: Any, state: Mapping) -> tuple[bool, dict | None]:
        """(allowed, replacement event dict or None), following ``check_event_allowed``."""
        replacement = None
        for fn in self._callbacks.get("check_event_allowed", ()):
            try:
                answer = await fn(event, state)
            except Exception:
                log.exception("module callback check_event_allowed failed")
                return False, None
            if isinstance(answer, tuple):
                allowed, new = answer
            else:
                allowed, new = bool(answer), None
            if not allowed:
                return False, None
            if isinstance(new, dict):
                replacement = new
        return True, replacement

    async def check_auth(self, login_type: str, user: str, body: Mapping[str, Any]) -> tuple[str, Any] | None:
        """Run the auth checkers for a login type whose fields are all present; the first
        that returns a user ID wins: (user_id, callback-or-None)."""
        for (known_type, fields), checkers in self.auth_checkers.items():
            if known_type != login_type:
                continue
            if not all(f in body for f in fields):
                continue
            login_dict = {f: body[f] for f in fields}
            for fn in checkers:
                try:
                    answer = await fn(user, login_type, login_dict)
                except Exception:
                    log.exception("password auth provider failed for login type %s", login_type)
                    continue
                if answer is not None:
                    return (answer, None) if isinstance(answer, str) else (answer[0], answer[1])
        return None

    def login_types(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.auth_checkers))

    async def check_3pid_auth(self, medium: str, address: str, password: str) -> tuple[str, Any] | None:
        answer = await self.first_not_none("check_3pid_auth", medium, address, password)
        if answer is None:
            return None
        return (answer, None) if isinstance(answer, str) else (answer[0], answer[1])

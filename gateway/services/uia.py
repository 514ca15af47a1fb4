"""User-interactive authentication.

Spec: client-server API, "User-Interactive Authentication API".
https://spec.matrix.org/latest/client-server-api/#user-interactive-authentication-api

Sessions live in the database, so a restart between stages does not break a flow.
"""

from __future__ import annotations

import secrets
from typing import Any, Awaitable, Callable

from ..http import Codes, MatrixError
from ..server import HomeServer
from ..storage.auth import AuthStore, UIASession

SESSION_LIFETIME_MS = 24 * 3600 * 1000
#: What the validated address of ``m.login.email.identity`` is for, per request.
EMAIL_STAGE_PURPOSES = {"POST /register": "registration", "POST /account/password (reset)": "password_reset"}

#: A stage checker gets the ``auth`` dict and the session's user (if any); it raises
#: MatrixError when the stage fails.
StageChecker = Callable[[dict[str, Any], "str | None"], Awaitable[None]]


class UIAService:
    def __init__(self, hs: HomeServer):
        self.hs = hs
        self.store = AuthStore(hs.db)
        self.checkers: dict[str, StageChecker] = {"m.login.dummy": self._check_dummy,
                                                  "m.login.sso": self._check_sso,
                                                  "m.login.email.identity": self._check_email}

    def register_stage(self, stage: str, checker: StageChecker) -> None:
        self.checkers[stage] = checker

    async def _check_dummy(self, auth: dict[str, Any], user_id: str | None) -> None:
        return None

    async def _check_sso(self, auth: dict[str, Any], user_id: str | None) -> None:
        """``m.login.sso`` is done in the browser (the fallback page, ``sso.handler``), which
        marks it complete in the session; retrying with it only passes once that happened.
        https://spec.matrix.org/latest/client-server-api/#sso-during-user-interactive-authentication
        """
        session = await self.store.get_uia_session(str(auth.get("session")))
        if session is None or "m.login.sso" not in session.completed:
            raise MatrixError(401, Codes.UNAUTHORIZED,
                              "Single sign-on has not been completed for this session yet: open the fallback page")

    async def _check_email(self, auth: dict[str, Any], user_id: str | None) -> None:
        """``m.login.email.identity``: a session of ``/register/email/requestToken`` (for
        ``/register``) or ``/account/password/email/requestToken`` (for a password reset) that
        the user validated by following the mailed link.
        https://spec.matrix.org/latest/client-server-api/#email-based-identity--homeserver"""
        session = await self.store.get_uia_session(auth["session"])
        purpose = EMAIL_STAGE_PURPOSES.get(session.request_key if session else "")
        if purpose is None:
            raise MatrixError(400, Codes.UNRECOGNIZED, "m.login.email.identity is not offered here")
        await self.hs.threepids.use_in_uia(auth, purpose)

    async def authenticate(
        self,
        request_key: str,
        body: dict[str, Any],
        flows: list[list[str]],
        *,
        user_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> str:
        """Return the session ID once some flow is complete; otherwise raise the 401
        that tells the client what to do next."""
        session_id, _ = await self.authenticate_stages(request_key, body, flows, user_id=user_id, params=params)
        return session_id

    async def get_session(self, body: dict[str, Any], request_key: str) -> UIASession | None:
        """The live session the request's ``auth`` names, if it was started for this kind
        of request."""
        auth = body.get("auth")
        session_id = auth.get("session") if isinstance(auth, dict) else None
        if not isinstance(session_id, str):
            return None
        session = await self.store.get_uia_session(session_id)
        if session is None or session.request_key != request_key \
                or session.created_ts < self.hs.clock_ms() - SESSION_LIFETIME_MS:
            return None
        return session

    async def authenticate_stages(
        self,
        request_key: str,
        body: dict[str, Any],
        flows: list[list[str]],
        *,
        user_id: str | None = None,
        params: dict[str, Any] | None = None,
        remember: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        keep: bool = False,
        optional: frozenset[str] = frozenset(),
    ) -> tuple[str, tuple[str, ...]]:
        """Like ``authenticate``, also returning the stages completed. ``remember()``: what
        a session started by this request keeps of it (its ``data``), asked for only when
        stages remain; ``keep``: the session outlives its completion (until it expires),
        for its ``data`` to be read again; ``optional``: stages accepted (and reported
        completed) though no flow needs them."""
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError.bad_json("'auth' must be an object")
        now = self.hs.clock_ms()
        session_id = auth.get("session") if auth else None
        if session_id is None:
            await self.store.expire_uia_sessions(now - SESSION_LIFETIME_MS)
            session_id = secrets.token_urlsafe(24)
            await self.store.create_uia_session(session_id, now, user_id, request_key)
            completed: tuple[str, ...] = ()
            new_session = True
        else:
            session = await self.store.get_uia_session(str(session_id))
            if session is None or session.created_ts < now - SESSION_LIFETIME_MS:
                raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired user-interactive auth session")
            if session.request_key != request_key or session.user_id != user_id:
                raise MatrixError(403, Codes.FORBIDDEN, "This auth session was started for a different request")
            completed = session.completed
            new_session = False

        error: MatrixError | None = None
        stage = auth.get("type") if auth else None
        if stage is None and auth and any("m.oauth" in flow for flow in flows):
            # m.oauth is done in the browser; the client then retries with just the session.
            stage = "m.oauth"
        if stage is not None:
            allowed = {s for flow in flows for s in flow} | optional
            checker = self.checkers.get(stage)
            if stage not in allowed or checker is None:
                error = MatrixError(400, Codes.UNRECOGNIZED, f"Auth stage {stage!r} is not offered here")
            else:
                try:
                    await checker({**auth, "session": session_id}, user_id)
                except NotTheUser:
                    raise
                except MatrixError as e:
                    error = e
                else:
                    completed = await self.store.mark_uia_stage_done(session_id, stage)

        for flow in flows:
            if all(s in completed for s in flow):
                if not keep:
                    await self.store.delete_uia_session(session_id)
                return session_id, tuple(completed)

        if new_session and remember is not None:
            await self.store.set_uia_session_data(session_id, await remember())
        body_401: dict[str, Any] = {
            "flows": [{"stages": flow} for flow in flows],
            "params": params or {},
            "session": session_id,
            "completed": list(completed),  # also when empty, as Synapse sends it
        }
        if error is not None:
            body_401["errcode"] = error.errcode
            body_401["error"] = error.error
        raise AuthRequired(body_401)


class NotTheUser(MatrixError):
    """A stage that authenticates another user than the one the request acts for: the
    request is refused (403), not answered with the stages to try again (as Synapse)."""

    def __init__(self, error: str = "You can only authenticate as yourself"):
        super().__init__(403, Codes.FORBIDDEN, error)


class AuthRequired(MatrixError):
    """The 401 of user-interactive auth: flows, params, session, completed stages and,
    when the last stage failed, its errcode and error."""

    def __init__(self, body: dict[str, Any]):
        super().__init__(401, body.get("errcode", Codes.UNAUTHORIZED), body.get("error", "Authentication required"))
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body

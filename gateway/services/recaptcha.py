"""The ``m.login.recaptcha`` stage: the client's answer is checked at the reCAPTCHA verify
API (``recaptcha_siteverify_api``) with our secret key.

Spec: https://spec.matrix.org/latest/client-server-api/#google-recaptcha
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from ..config.captcha import CaptchaConfig
from ..http import Codes, MatrixError

log = logging.getLogger(__name__)

TIMEOUT_S = 30


class RecaptchaVerifier:
    def __init__(self, config: CaptchaConfig, connector: Callable[[], aiohttp.BaseConnector]):
        """``connector()``: outbound connections under the outbound IP rules."""
        self.config = config
        self._connector = connector
        self._session: aiohttp.ClientSession | None = None

    async def check(self, response: Any) -> None:
        """Raise unless the verify API says the answer is right: 400 ``M_CAPTCHA_NEEDED``
        without one, 401 ``M_UNAUTHORIZED`` for a wrong one, 502 when it cannot be asked."""
        if not isinstance(response, str) or not response:
            raise MatrixError(400, Codes.CAPTCHA_NEEDED, "The captcha's 'response' is required")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=self._connector(),
                                                  timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                                  headers={"User-Agent": "Gateway"})
        try:
            async with self._session.post(self.config.siteverify_api, allow_redirects=False,
                                          data={"secret": self.config.private_key or "", "response": response}) as resp:
                answer = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            log.warning("the captcha verify API could not be asked: %s", e)
            raise MatrixError(502, Codes.UNKNOWN, "The captcha could not be checked") from None
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise MatrixError(401, Codes.UNAUTHORIZED, "The captcha was not solved")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

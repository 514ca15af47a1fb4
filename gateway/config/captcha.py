"""A reCAPTCHA at registration: Synapse's top-level keys.

Spec: https://spec.matrix.org/latest/client-server-api/#google-recaptcha (the
``m.login.recaptcha`` stage of user-interactive authentication).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._values import ConfigError, Section

DEFAULT_SITEVERIFY_API = "https://www.recaptcha.net/recaptcha/api/siteverify"


@dataclass(frozen=True)
class CaptchaConfig:
    #: ``enable_registration_captcha``: registering needs the ``m.login.recaptcha`` stage.
    enable_registration_captcha: bool = False
    #: ``recaptcha_public_key``: given to clients (the stage's ``params``) to show the captcha.
    public_key: str | None = None
    #: ``recaptcha_private_key``: the secret sent with each answer to the verify API.
    private_key: str | None = None
    #: ``recaptcha_siteverify_api``: where answers are checked.
    siteverify_api: str = DEFAULT_SITEVERIFY_API

    @property
    def configured(self) -> bool:
        """Whether answers can be checked (both keys are set)."""
        return self.public_key is not None and self.private_key is not None


def parse_captcha_config(root: Section) -> CaptchaConfig:
    config = CaptchaConfig(
        enable_registration_captcha=root.bool("enable_registration_captcha", False),
        public_key=root.str("recaptcha_public_key", None),
        private_key=root.str("recaptcha_private_key", None),
        siteverify_api=root.str("recaptcha_siteverify_api", DEFAULT_SITEVERIFY_API),
    )
    if config.enable_registration_captcha:
        for key, value in (("recaptcha_public_key", config.public_key), ("recaptcha_private_key", config.private_key)):
            if not value:
                raise ConfigError(key, "is required with enable_registration_captcha: true")
    if not config.siteverify_api.startswith(("https://", "http://")):
        raise ConfigError("recaptcha_siteverify_api", "must be an http(s) URL")
    return config

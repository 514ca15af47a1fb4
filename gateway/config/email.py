"""The ``email`` section (Synapse's keys): the SMTP server Gateway sends its own mail through
(address validation, password resets, missed-message notifications), and what the mails say.

https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#email
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._values import ConfigError, Section

#: Synapse's default subjects (``email.subjects``), with its ``%(app)s``, ``%(person)s``,
#: ``%(room)s`` and ``%(server_name)s`` placeholders.
DEFAULT_SUBJECTS: dict[str, str] = {
    "message_from_person_in_room": "[%(app)s] You have a message on %(app)s from %(person)s in the %(room)s room...",
    "message_from_person": "[%(app)s] You have a message on %(app)s from %(person)s...",
    "messages_from_person": "[%(app)s] You have messages on %(app)s from %(person)s...",
    "messages_in_room": "[%(app)s] You have messages on %(app)s in the %(room)s room...",
    "messages_in_room_and_others": "[%(app)s] You have messages on %(app)s in the %(room)s room and others...",
    "messages_from_person_and_others": "[%(app)s] You have messages on %(app)s from %(person)s and others...",
    "invite_from_person_to_room": "[%(app)s] %(person)s has invited you to join the %(room)s room on %(app)s...",
    "invite_from_person": "[%(app)s] %(person)s has invited you to chat on %(app)s...",
    "password_reset": "[%(server_name)s] Password reset",
    "email_validation": "[%(server_name)s] Validate your email",
}


@dataclass(frozen=True)
class EmailConfig:
    #: False when the section is absent: no mail is sent, email 3PIDs cannot be validated.
    enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_pass: str | None = None
    #: Implicit TLS from the first byte (SMTPS).
    force_tls: bool = False
    #: Refuse to send unless the server offers STARTTLS.
    require_transport_security: bool = False
    #: Use STARTTLS when offered (and check the certificate); false: never.
    enable_tls: bool = True
    notif_from: str = ""
    app_name: str = "Matrix"
    enable_notifs: bool = False
    notif_for_new_users: bool = True
    client_base_url: str = "https://matrix.to"
    validation_token_lifetime_ms: int = 3_600_000
    invite_client_location: str | None = None
    subjects: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SUBJECTS))

    def from_address(self, app: str | None = None) -> str:
        return self.notif_from % {"app": app or self.app_name}


def parse_email_config(root: Section) -> tuple[EmailConfig, list[str]]:
    if not root.has("email"):
        root.used.add("email")
        return EmailConfig(), []
    s = root.section("email")
    force_tls = s.bool("force_tls", False)
    notif_from = s.str("notif_from")
    if "@" not in notif_from:
        raise ConfigError(s.key("notif_from"), f"expected a mail address (e.g. 'Matrix <noreply@example.com>'), "
                                               f"got {notif_from!r}")
    try:
        notif_from % {"app": "x"}
    except (KeyError, ValueError, TypeError):
        raise ConfigError(s.key("notif_from"), "the only placeholder is %(app)s (with the trailing s)") from None
    user, password = s.str("smtp_user", None), s.str("smtp_pass", None)
    if (user is None) != (password is None):
        raise ConfigError(s.key("smtp_pass" if user is not None else "smtp_user"), "smtp_user and smtp_pass go together")
    client_base_url, old_name = s.str("client_base_url", None), s.str("riot_base_url", None)
    client_base_url = client_base_url or old_name or "https://matrix.to"
    if not client_base_url.startswith(("https://", "http://")):
        raise ConfigError(s.key("client_base_url"), f"expected an http(s) URL, got {client_base_url!r}")
    lifetime = s.duration_ms("validation_token_lifetime", 3_600_000)
    if lifetime < 60_000:
        raise ConfigError(s.key("validation_token_lifetime"), "expected at least 1m")
    subjects = dict(DEFAULT_SUBJECTS)
    ss = s.section("subjects")
    for name, default in DEFAULT_SUBJECTS.items():
        subjects[name] = ss.str(name, default)
        try:
            subjects[name] % {"app": "a", "person": "p", "room": "r", "server_name": "s"}
        except (KeyError, ValueError, TypeError):
            raise ConfigError(ss.key(name), "placeholders are %(app)s, %(person)s, %(room)s, %(server_name)s") \
                from None
    location = s.str("invite_client_location", None)
    if location is not None and not location.startswith(("https://", "http://")):
        raise ConfigError(s.key("invite_client_location"), f"expected an http(s) URL, got {location!r}")
    for old in ("template_dir", "notif_template_html", "notif_template_text", "expiry_template_html",
                "expiry_template_text"):
        s.ignore(old)
    config = EmailConfig(
        enabled=True,
        smtp_host=s.str("smtp_host", "localhost"),
        smtp_port=s.int("smtp_port", 465 if force_tls else 25, minimum=1, maximum=65535),
        smtp_user=user, smtp_pass=password, force_tls=force_tls,
        require_transport_security=s.bool("require_transport_security", False),
        enable_tls=s.bool("enable_tls", True),
        notif_from=notif_from,
        app_name=s.str("app_name", "Matrix"),
        enable_notifs=s.bool("enable_notifs", False),
        notif_for_new_users=s.bool("notif_for_new_users", True),
        client_base_url=client_base_url.rstrip("/"),
        validation_token_lifetime_ms=lifetime,
        invite_client_location=location,
        subjects=subjects,
    )
    warnings = [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys() + ss.unknown_keys()]
    if config.require_transport_security and not config.enable_tls and not force_tls:
        raise ConfigError(s.key("require_transport_security"), "needs enable_tls (or force_tls)")
    return config, warnings

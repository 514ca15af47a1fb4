"""The pure parts of missed-message mails: subjects (Synapse's ``email.subjects`` cases),
links into the client, unsubscribe tokens. The mails themselves:
tests/gateway/client_api/test_email_notifs.py."""

from __future__ import annotations

from gateway.config.email import DEFAULT_SUBJECTS
from gateway.services.email_notifs import room_link, subject_for, unsubscribe_token


def room(title: str, *senders: str, named: bool = True, invite: bool = False) -> dict:
    return {"title": title, "named": named, "invite": invite, "inviter": senders[0] if invite else "",
            "notifs": [] if invite else [{"sender_name": s} for s in senders]}


def test_subjects():
    def subject(*rooms):
        return subject_for(DEFAULT_SUBJECTS, "Chat", list(rooms))

    assert subject(room("Garden", "Bob")) == "[Chat] You have a message on Chat from Bob in the Garden room..."
    assert subject(room("Bob", "Bob", named=False)) == "[Chat] You have a message on Chat from Bob..."
    assert subject(room("Bob", "Bob", "Bob", named=False)) == "[Chat] You have messages on Chat from Bob..."
    assert subject(room("Garden", "Bob", "Carol")) == "[Chat] You have messages on Chat in the Garden room..."
    assert subject(room("Garden", "Bob"), room("Shed", "Carol")) == \
        "[Chat] You have messages on Chat in the Garden room and others..."
    assert subject(room("Garden", "Bob"), room("Shed", "Bob")) == \
        "[Chat] You have messages on Chat from Bob and others..."
    assert subject(room("Garden", "Bob", invite=True)) == \
        "[Chat] Bob has invited you to join the Garden room on Chat..."
    assert subject(room("Bob", "Bob", named=False, invite=True)) == "[Chat] Bob has invited you to chat on Chat..."


def test_links_and_tokens():
    assert room_link("https://matrix.to", "!r:hs.test", "$e") == "https://matrix.to/#/!r:hs.test/$e"
    assert room_link("https://app.example", "!r:hs.test") == "https://app.example/#/room/!r:hs.test"
    assert room_link("https://app.example", "!r/x:hs.test") == "https://app.example/#/room/!r%2Fx:hs.test"
    token = unsubscribe_token(b"k", "@a:hs.test", "m.email", "a@example.org")
    assert token == unsubscribe_token(b"k", "@a:hs.test", "m.email", "a@example.org")
    assert token != unsubscribe_token(b"k", "@a:hs.test", "m.email", "b@example.org")
    assert token != unsubscribe_token(b"other", "@a:hs.test", "m.email", "a@example.org")

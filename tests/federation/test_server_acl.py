"""Server ACL matching (m.room.server_acl), the spec's rules in order."""

from __future__ import annotations

import pytest

from federation.server_acl import server_acl_from_content, server_is_allowed


@pytest.mark.parametrize("content,server,allowed", [
    (None, "anything.org", True),
    ({}, "anything.org", False),  # allow defaults to nothing
    ({"allow": ["*"]}, "evil.com", True),
    ({"allow": ["*"], "deny": ["evil.com"]}, "evil.com", False),
    ({"allow": ["*"], "deny": ["evil.com"]}, "evil.com:8448", False),  # ports never count
    ({"allow": ["*"], "deny": ["evil.com"]}, "EVIL.com:1234", False),  # case-insensitive
    ({"allow": ["*"], "deny": ["evil.com"]}, "notevil.com", True),
    ({"allow": ["*"], "deny": ["*.evil.com"]}, "a.b.evil.com", False),
    ({"allow": ["*"], "deny": ["*.evil.com"]}, "evil.com", True),
    ({"allow": ["good?.org"]}, "good1.org", True),
    ({"allow": ["good?.org"]}, "good12.org", False),
    ({"allow": ["good.org"]}, "goodxorg", False),  # '.' is literal
    ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4:8448", False),
    ({"allow": ["*"], "allow_ip_literals": False}, "[::1]:8448", False),
    ({"allow": ["*"], "allow_ip_literals": "no"}, "1.2.3.4", True),  # not a boolean: default true
    ({"allow": ["*"]}, "[::1]", True),
    ({"allow": ["1.2.3.*"]}, "1.2.3.4:80", True),
    ({"allow": ["*"], "deny": ["[::1]"]}, "[::1]:8448", False),
    ({"allow": "*"}, "x.org", False),  # not a list: ignored
    ({"allow": [5, "x.org"]}, "x.org", True),  # non-strings skipped
    ({"allow": ["*"], "deny": ["a*"]}, "a\nb.org", False),
])
def test_acl_rules(content, server, allowed):
    assert server_is_allowed(content, server) is allowed


def test_parsed_acl():
    acl = server_acl_from_content({"allow": ["*", 3], "deny": ["x"], "allow_ip_literals": False})
    assert acl.allow == ("*",) and acl.deny == ("x",) and not acl.allow_ip_literals

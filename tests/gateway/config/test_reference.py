"""docs/config.md is generated from the config parsers (gateway/config/reference.py): it must
match them, describe only keys they read, and cover every section they read."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys

import pytest

from gateway.config import _values
from gateway.config import reference
from gateway.config.descriptions import DESCRIPTIONS
from gateway.config.reference import REFRESH_COMMAND, collect_keys, render_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DOC = os.path.join(ROOT, "docs", "config.md")
#: Sections deliberately without a sample part, and why.
UNSAMPLED = {"oidc_config": "deprecated; the keys of an oidc_providers entry, described there"}


@pytest.fixture(scope="module")
def docs():
    return collect_keys()


def test_docs_config_md_is_current(docs):
    expected = render_reference(docs)
    with open(DOC, encoding="utf-8") as f:
        actual = f.read()
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                                 "docs/config.md", "generated"))[:40])
        pytest.fail(f"docs/config.md is out of date; refresh it with:\n    {REFRESH_COMMAND}\n{diff}")


def test_the_command_writes_the_reference(tmp_path, docs):
    out = tmp_path / "config.md"
    r = subprocess.run([sys.executable, "-m", "gateway", "config-reference", "-o", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert out.read_text() == render_reference(docs)


def test_the_reference_lists_what_the_parsers_read(docs):
    by_path = {d.path: d for d in docs}
    port = by_path["listeners[].port"]
    assert (port.kind, port.default, port.minimum, port.maximum) == ("integer", reference.REQUIRED, 0, 65535)
    assert by_path["listeners"].kind == "list of mappings"
    assert by_path["oidc_providers[].pkce_method"].choices == ("auto", "always", "never")
    assert by_path["oidc_providers[].attribute_requirements[].one_of"].kind == "list of strings"
    # Read only after ``has`` said it is there: optional, not required.
    assert by_path["database.args.user"].default is None
    assert by_path["oidc_providers[].client_secret_path"].default is None
    assert by_path["key_refresh_interval"].kind == "duration"
    assert reference.render_default(by_path["key_refresh_interval"]) == "`1d`"
    assert reference.render_default(by_path["max_upload_size"]) == "`50M`"
    assert by_path["media_retention"].kind == "ignored" and by_path["report_stats"].kind == "ignored"
    # Every sample part contributes: the SSO sections, consent, notices, media and modules.
    for path in ("saml2_config.sp_config", "cas_config.server_url", "jwt_config.secret_path",
                 "user_consent.template_dir", "server_notices.auto_join", "thumbnail_sizes[].method",
                 "modules[].module", "registration_shared_secret_path", "rc_admin_redaction.per_second",
                 "oidc_providers[].client_secret_jwt_key.key_file"):
        assert path in by_path, path


def test_every_description_names_a_key_the_parsers_read(docs):
    paths = {d.path for d in docs}
    stale = sorted(set(DESCRIPTIONS) - paths)
    assert not stale, f"gateway/config/descriptions.py describes keys no parser reads: {stale}"


def test_every_section_the_parsers_read_has_its_keys_documented(docs):
    """A mapping or list read with ``section``/``list`` but with no key read under it is a
    section the samples never switch on: its keys would be missing from the reference."""
    paths = {d.path for d in docs}
    missing = []
    for d in docs:
        structured = {r.kind for r in d.reads} & {"mapping", "list"}
        children = any(p.startswith((d.path + ".", d.path + "[]")) for p in paths)
        if structured and not children and d.path not in UNSAMPLED:
            missing.append(d.path)
    assert not missing, (f"no key of {missing} is ever read: add a sample part that switches them on to "
                         f"sample_parts() in gateway/config/reference.py, then run {REFRESH_COMMAND}")


def test_a_section_read_only_when_present_is_documented_without_a_sample(monkeypatch):
    """``if root.has("server_notices")`` sections are parsed once as an empty mapping, so a new
    section of that shape shows its keys before anyone writes a sample part for it."""
    original = reference.sample_parts

    def without_notices(tmp):
        parts = original(tmp)
        del parts["server_notices"]
        return parts

    monkeypatch.setattr(reference, "sample_parts", without_notices)
    by_path = {d.path: d for d in collect_keys()}
    # An empty server_notices reads its switch (then stops: notices stay off).
    assert by_path["server_notices"].kind == "mapping"
    assert by_path["server_notices.system_mxid_localpart"].kind == "string"


def test_reads_are_reported_only_while_recording():
    seen: list[_values.KeyRead] = []
    section = _values.Section({"a": [{"b": "x"}]})
    with _values.recording_reads(seen.append):
        item = _values.Section(section.list("a")[0], "a[0]")
        item.str("b", choices=("x", "y"))
        item.has("c")
        item.int("d", 3, minimum=1)
    section.bool("e", False)  # after the block: not reported
    assert [(r.path, r.kind) for r in seen] == [("a", "list"), ("a[].b", "string"), ("a[].c", "probe"),
                                                ("a[].d", "integer")]
    assert seen[1].default is ... and seen[1].choices == ("x", "y")
    assert seen[3].default == 3 and seen[3].minimum == 1

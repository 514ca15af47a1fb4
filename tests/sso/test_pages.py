"""Page templates: custom directory first, autoescape, filters, and ``gateway check-templates``."""

from __future__ import annotations

import yaml

from gateway.__main__ import main
from sso.pages import SAMPLE_CONTEXTS, build_environment, check_templates, format_ts


def test_defaults_render_and_escape():
    env = build_environment(public_baseurl="https://hs.example/")
    assert check_templates(env) == []
    html = env.get_template("sso_error.html").render(error="<b>x</b>", error_description="<script>1</script>")
    assert "<script>1</script>" not in html and "&lt;script&gt;" in html
    picker = env.get_template("sso_login_idp_picker.html").render(**SAMPLE_CONTEXTS["sso_login_idp_picker.html"])
    assert "https://hs.example/_matrix/media/v1/thumbnail/example.com/icon?width=32&amp;height=32" in picker


def test_filters():
    env = build_environment(public_baseurl="https://hs/")
    assert format_ts(0) == "1970-01-01 00:00:00"
    assert env.from_string("{{ 'a@b.c' | localpart_from_email }}").render() == "a"
    assert env.from_string("{{ 'https://x' | mxc_to_http(8, 8) }}").render() == ""


def test_custom_directory_overrides_one_file(tmp_path):
    (tmp_path / "sso_error.html").write_text("CUSTOM {{ error }}")
    env = build_environment(str(tmp_path))
    assert env.get_template("sso_error.html").render(error="<x>") == "CUSTOM &lt;x&gt;"
    assert "Create your account" in env.get_template("sso_auth_account_details.html").render(
        **SAMPLE_CONTEXTS["sso_auth_account_details.html"])


def write_config(tmp_path, custom=None):
    data = {"server_name": "hs.test"}
    if custom:
        data["templates"] = {"custom_template_directory": str(custom)}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_check_templates_cli(tmp_path, capsys):
    assert main(["check-templates", "-c", write_config(tmp_path)]) == 0
    assert f"{len(SAMPLE_CONTEXTS)} templates render" in capsys.readouterr().out
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sso_redirect_confirm.html").write_text("{{ user_id | no_such_filter }}")
    (custom / "sso_error.html").write_text("{% if %}")
    assert main(["check-templates", "-c", write_config(tmp_path, custom)]) == 1
    err = capsys.readouterr().err
    assert "sso_redirect_confirm.html" in err and "sso_error.html" in err and "2 of" in err

"""The operator docs stay true: every homeserver.yaml example parses with our parser and
uses only keys it reads, every template is documented with its variables, and every link
between the docs leads somewhere."""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from gateway.config import parse_config
from sso.pages import SAMPLE_CONTEXTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
#: Put this line right before a YAML block that is not part of a homeserver.yaml.
NOT_CONFIG = "<!-- not homeserver.yaml -->"
#: Examples name files under this directory; the test makes them in a temporary one.
EXAMPLE_DIR = "/etc/gateway/"
_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def _yaml_examples() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in _FENCE.finditer(text):
            before = text[:m.start()].rstrip().rsplit("\n", 1)[-1]
            if before.strip() != NOT_CONFIG:
                line = text[:m.start()].count("\n") + 1
                out.append((f"{_rel(path)}:{line}", m.group(1)))
    return out


def _make_files(data, tmp: str) -> None:
    """Create the files and directories an example names (the parser reads or checks them)."""
    if isinstance(data, list):
        for item in data:
            _make_files(item, tmp)
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if isinstance(value, str) and value.startswith(tmp):
            if key in ("custom_template_directory", "template_dir"):
                os.makedirs(value, exist_ok=True)
                if key == "template_dir":  # user_consent: the policy document of its version
                    os.makedirs(os.path.join(value, "en"), exist_ok=True)
                    with open(os.path.join(value, "en", f"{data.get('version')}.html"), "w") as f:
                        f.write("<p>policy</p>")
            else:
                os.makedirs(os.path.dirname(value), exist_ok=True)
                with open(value, "w") as f:
                    f.write("secret-from-a-file")
        else:
            _make_files(value, tmp)


EXAMPLES = _yaml_examples()


def test_the_docs_have_config_examples():
    where = {name.split(":")[0] for name, _ in EXAMPLES}
    assert {"docs/sso.md", "docs/reverse-proxy.md"} <= where, where


@pytest.mark.parametrize("name, block", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_config_example_parses_and_uses_only_known_keys(name, block, tmp_path):
    tmp = str(tmp_path) + "/"
    data = yaml.safe_load(block.replace(EXAMPLE_DIR, tmp))
    assert isinstance(data, dict), f"{name}: not a mapping (mark other YAML with {NOT_CONFIG})"
    _make_files(data, tmp)
    config = parse_config({"server_name": "example.com", **data}, config_path=str(tmp_path / "homeserver.yaml"))
    unknown = [w for w in config.warnings if "unknown config key" in w]
    assert not unknown, f"{name}: {unknown}"


def test_every_template_is_documented_with_its_variables():
    with open(os.path.join(ROOT, "docs", "sso.md"), encoding="utf-8") as f:
        # A row names one template or several (``a.html``, ``a.txt``) in its first cell.
        rows = {name: line for line in f if (m := re.match(r"^\| ([^|]+) \|", line))
                for name in re.findall(r"`([a-z_]+\.(?:html|txt))`", m.group(1))}
    for template, context in SAMPLE_CONTEXTS.items():
        assert template in rows, f"docs/sso.md has no row for {template}"
        missing = [v for v in context if f"`{v}`" not in rows[template]]
        assert not missing, f"docs/sso.md: {template} lacks the variables {missing}"


def _anchors(path: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    with open(path, encoding="utf-8") as f:
        headings = [line.lstrip("#").strip() for line in f if re.match(r"^#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_docs_lead_somewhere():
    broken = []
    for path in DOCS:
        with open(path, encoding="utf-8") as f:
            text = re.sub(r"^```.*?^```", "", f.read(), flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                broken.append(f"{_rel(path)}: {target}")
            elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
                broken.append(f"{_rel(path)}: {target} (no such heading)")
    assert not broken, broken


def test_the_readme_links_every_doc_and_nothing_outside_the_repository():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    docs = {_rel(p) for p in DOCS if p.startswith(os.path.join(ROOT, "docs"))}
    assert docs - linked == set(), f"README.md does not link {sorted(docs - linked)}"
    outside = [t for t in re.findall(r"\]\(([^)\s]+)\)|`(\.\./[^`]*)`", readme) for t in t if t.startswith("../")]
    assert not outside, f"README.md points outside the repository: {outside}"

"""The wheel's metadata is what the package index shows: license, links, no tooling."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel in a subprocess

ROOT = Path(__file__).resolve().parent.parent

#: Development tools that must never be a default requirement of the package.
TOOLS = {
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "fakeredis",
    "coverage",
    "mypy",
    "ruff",
    "asyncpg-stubs",
    "types-croniter",
    "mkdocs",
    "mkdocs-material",
    "mkdocstrings",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("asyncq-*.whl")
    return built


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        licenses = [n for n in archive.namelist() if "/licenses/" in n]
        assert licenses == [name.replace("METADATA", "licenses/LICENSE")]
        assert b"Copyright (c) 2026 the asyncq authors" in archive.read(licenses[0])
        return email.message_from_bytes(archive.read(name))


def test_the_wheel_holds_every_file_of_the_dashboard(
    wheel: Path, metadata: email.message.Message
) -> None:
    package = ROOT / "asyncq" / "dashboard"
    expected = {
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (package / folder).iterdir()
    }
    assert len(expected) > 10
    with zipfile.ZipFile(wheel) as archive:
        assert expected <= set(archive.namelist())
        texts = [archive.read(name).decode() for name in sorted(expected)]
    for text in texts:  # nothing from a CDN: every asset is one of these files
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text)
    assert "dashboard" in (metadata.get_all("Provides-Extra") or [])
    requires = metadata.get_all("Requires-Dist") or []
    extra = [r for r in requires if r.replace("'", '"').endswith('extra == "dashboard"')]
    assert {r.split(">")[0] for r in extra} == {"starlette", "jinja2", "uvicorn"}


def test_the_wheel_names_its_license(metadata: email.message.Message) -> None:
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_the_wheel_links_to_docs_repository_changelog_and_issues(
    metadata: email.message.Message,
) -> None:
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert urls == {
        "Homepage": "https://github.com/asyncq/asyncq",
        "Documentation": "https://asyncq.github.io/asyncq/",
        "Repository": "https://github.com/asyncq/asyncq",
        "Changelog": "https://github.com/asyncq/asyncq/blob/main/CHANGELOG.md",
        "Issues": "https://github.com/asyncq/asyncq/issues",
    }


def test_no_development_tool_is_a_requirement(metadata: email.message.Message) -> None:
    requires = metadata.get_all("Requires-Dist") or []
    default = [r for r in requires if "extra ==" not in r]
    assert {r.split(">")[0].split("[")[0].strip() for r in default} == {
        "anyio",
        "msgspec",
        "click",
        "opentelemetry-api",
    }
    for requirement in requires:
        name = requirement.split(";")[0].split(">")[0].split("[")[0].strip()
        assert name not in TOOLS, requirement
    assert "dev" not in (metadata.get_all("Provides-Extra") or [])


def test_the_readme_links_resolve_off_the_repository(metadata: email.message.Message) -> None:
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert "# asyncq" in description
    targets = re.findall(r"\]\(([^)]+)\)", description)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "#"))]
    assert relative == []

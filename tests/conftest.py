"""Shared fixtures: the repository as a newsletter folder, built sample issues, a CLI runner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from pipeline import build, settings

# HYPOTHESIS_PROFILE=thorough for a long hunt; CI runs the default.
hypothesis_settings.register_profile("default", max_examples=60)
hypothesis_settings.register_profile("thorough", max_examples=1500)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The Ctrl-C tests send SIGINT to the processes they start. A suite started in the
# background (`cmd &` in a script, nohup) has SIGINT ignored, and an ignored signal stays
# ignored in every process started from it: those processes would never see their Ctrl-C.
# Python's own handler here is reset to the default at exec, so they see it as in a shell.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Nothing may reach the internet at test time. Builds started as processes only read local
# image sizes; in this process any connection to a host that is not loopback is refused,
# so a test that would need the network fails the same way on every machine.
os.environ["PUBLISH_IMAGE_SIZES"] = "local"
LOOPBACK = ("127.", "::1", "localhost")


def _refuse_the_internet(event: str, args: tuple) -> None:
    if event == "socket.connect" and len(args) > 1 and isinstance(args[1], tuple):
        host = str(args[1][0])
        if not host.startswith(LOOPBACK):
            raise ConnectionRefusedError(f"tests may not reach {host} (loopback only)")
    if event == "socket.getaddrinfo" and args and args[0] is not None:
        host = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        if not host.startswith(LOOPBACK) and host not in ("", "0.0.0.0"):
            raise OSError(f"tests may not look up {host} (loopback only)")


sys.addaudithook(_refuse_the_internet)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLES = {
    "en": ROOT / "issues" / "2025-01-ai-art.md",
    "zh": ROOT / "issues" / "2025-02-video-models.md",
}


@pytest.fixture(scope="session")
def repo_settings() -> settings.Settings:
    return settings.load(ROOT, env={})


@pytest.fixture(scope="session", params=sorted(SAMPLES))
def sample(request, repo_settings, tmp_path_factory) -> build.BuildResult:
    """Each sample issue, built once per test session into a temporary folder."""
    out = tmp_path_factory.mktemp(request.param) / "out"
    return build.build(SAMPLES[request.param], repo_settings, out)


def run_publish(*args: str, cwd: Path = ROOT, env: dict | None = None):
    """Run the real `publish` command in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120,
    )


def empty_letter(folder: Path) -> Path:
    """A newsletter folder with real-looking settings and an empty `issues/`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "publish.toml").write_text(
        'name = "Test Letter"\nbase_url = "https://letter.example/"\n'
        'postal_address = "1 Test Street"\n', "utf-8")
    (folder / "issues").mkdir()
    return folder


def write_issue(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, "utf-8")
    return path


def copy_sample_newsletter(folder: Path) -> Path:
    """A copy of this repository's sample newsletter, to change freely in a test."""
    folder.mkdir(parents=True)
    for name in ("email_templates", "issues", "assets", "subscribers"):
        shutil.copytree(ROOT / name, folder / name)
    shutil.copy2(ROOT / "publish.toml", folder / "publish.toml")
    return folder


def assert_email_promises(built) -> None:
    """What every built email must keep, whatever went in: nothing email cannot show,
    every in-page link resolving to an `<a id name>`, every image absolute with alt text,
    and a text part."""
    import re

    from bs4 import BeautifulSoup

    from pipeline.embeds import FORBIDDEN_TAGS

    soup = BeautifulSoup(built.html, "html.parser")
    names = {tag.name for tag in soup.find_all(True)}
    assert not names & FORBIDDEN_TAGS
    assert not [n for n in names if "-" in n]
    for link in soup.find_all("a", href=re.compile(r"^#")):
        assert soup.find("a", attrs={"name": link["href"][1:]}) is not None, link["href"]
    for img in soup.find_all("img"):
        assert re.match(r"https?://|data:", img["src"]), img["src"]
        assert img.get("alt") is not None
    assert built.text.strip()


@pytest.fixture
def substack(monkeypatch):
    """The strict Substack-compatible server on loopback, with the environment pointing at it."""
    from tests.substack_server import SID, FakeSubstack

    with FakeSubstack() as server:
        monkeypatch.setenv("SUBSTACK_SID", SID)
        monkeypatch.setenv("SUBSTACK_PUBLICATION_URL", server.url)
        monkeypatch.setenv("SUBSTACK_API_URL", server.global_url)
        yield server

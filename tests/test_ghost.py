"""`--service ghost` against a strict loopback Ghost Admin API (not a real Ghost: see the
README): HTML drafts with Ghost cards, images once, edit collisions, publish + email to a
newsletter, scheduling, and JWTs that Ghost would accept."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from tests.conftest import copy_sample_newsletter, run_publish
from tests.ghost_server import KEY, KEY_ID, SECRET, FakeGhost

EN = "issues/2025-01-ai-art.md"


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", "k" * 32)
    return copy_sample_newsletter(tmp_path / "letter")


@pytest.fixture
def ghost():
    with FakeGhost() as server:
        yield server


def _run(letter, server, *args, key=KEY, **settings):
    env = {"GHOST_ADMIN_API_KEY": key, "GHOST_URL": server.url,
           **{f"PUBLISH_{k.upper()}": v for k, v in settings.items()}}
    return run_publish(*args, cwd=letter, env=env)


def _touch(letter, old="Welcome to the first issue", new="Welcome back to the first issue"):
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace(old, new), "utf-8")


def test_html_draft_with_ghost_cards_and_images_uploaded_once(letter, ghost):
    first = _run(letter, ghost, "draft", EN, "--service", "ghost")
    assert first.returncode == 0, first.stderr
    assert len(ghost.posts) == 1
    post = next(iter(ghost.posts.values()))
    assert post["status"] == "draft" and post["title"].startswith("Pixels & Prose #1")
    html = post["html"]
    assert 'class="kg-card kg-embed-card"' in html and "youtube.com/embed/" in html
    assert 'class="kg-card kg-bookmark-card"' in html
    assert 'class="card' not in html  # no email table cards left
    uploads = ghost.count("POST", "/ghost/api/admin/images/upload/")
    assert uploads >= 2 and len(ghost.images) == uploads
    assert f"{ghost.url}/content/images/" in html
    assert all(src.startswith(ghost.url) for src in re.findall(r'<img[^>]* src="([^"]+)"', html))

    _touch(letter)
    second = _run(letter, ghost, "draft", EN, "--service", "ghost")
    assert second.returncode == 0, second.stderr
    assert "Changed content" in second.stdout
    assert len(ghost.posts) == 1 and "Welcome back" in post["html"]
    assert ghost.count("POST", "/ghost/api/admin/images/upload/") == uploads  # cached
    assert ghost.count("PUT", r"/ghost/api/admin/posts/\w+/") == 1


def test_edit_in_ghost_is_refused_without_force(letter, ghost):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    post_id = next(iter(ghost.posts))
    ghost.edit(post_id, title="Retitled in Ghost")
    _touch(letter)
    refused = _run(letter, ghost, "draft", EN, "--service", "ghost")
    assert refused.returncode == 1 and "edited in Ghost" in refused.stderr
    assert ghost.posts[post_id]["title"] == "Retitled in Ghost"
    forced = _run(letter, ghost, "draft", EN, "--service", "ghost", "--force")
    assert forced.returncode == 0, forced.stderr
    assert ghost.posts[post_id]["title"].startswith("Pixels & Prose #1")


def test_an_edit_saved_during_the_update_is_ghosts_409_and_kept(letter, ghost):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    post_id = next(iter(ghost.posts))
    ghost.edit_before_next_put = post_id
    _touch(letter)
    result = _run(letter, ghost, "draft", EN, "--service", "ghost")
    assert result.returncode == 1 and "while publish updated it" in result.stderr
    assert ghost.posts[post_id]["title"].endswith("(edited in Ghost)")


def test_send_publishes_and_emails_once_to_the_newsletter(letter, ghost):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    post = next(iter(ghost.posts.values()))
    sent = _run(letter, ghost, "send", EN, "--service", "ghost", "--yes",
                ghost_newsletter="announcements", ghost_email_segment="status:-free")
    assert sent.returncode == 0, sent.stderr
    assert post["status"] == "published" and post["newsletter"]["slug"] == "announcements"
    assert post["email"]["recipient_filter"] == "status:-free"
    assert "emailed to announcements" in sent.stdout
    requests = len(ghost.log)
    again = _run(letter, ghost, "send", EN, "--service", "ghost", "--yes")
    assert again.returncode == 1 and "already published" in again.stderr
    assert len(ghost.log) == requests


def test_default_newsletter_is_the_sites_first(letter, ghost):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    assert _run(letter, ghost, "send", EN, "--service", "ghost", "--yes").returncode == 0
    post = next(iter(ghost.posts.values()))
    assert post["newsletter"]["slug"] == "weekly" and post["email_segment"] == "all"


@pytest.mark.parametrize("settings, message, requests", [
    ({"ghost_newsletter": "nope"}, "no active newsletter 'nope'", "reads"),
    ({"ghost_newsletter": "old-letter"}, "no active newsletter 'old-letter'", "reads"),
    ({"ghost_email_segment": "everyone; drop"}, "ghost_email_segment", "none"),
])
def test_bad_newsletter_or_segment_is_refused_before_any_write(letter, ghost, settings,
                                                               message, requests):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    before, writes = len(ghost.log), ghost.writes()
    result = _run(letter, ghost, "send", EN, "--service", "ghost", "--yes", **settings)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert ghost.writes() == writes
    if requests == "none":
        assert len(ghost.log) == before
    assert next(iter(ghost.posts.values()))["status"] == "draft"


def test_schedule_and_unschedule(letter, ghost):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    post = next(iter(ghost.posts.values()))
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).replace(microsecond=0)
    result = _run(letter, ghost, "send", EN, "--service", "ghost", "--at", at.isoformat(),
                  "--yes")
    assert result.returncode == 0, result.stderr
    assert post["status"] == "scheduled" and post["newsletter"]["slug"] == "weekly"
    assert dt.datetime.fromisoformat(post["published_at"].replace("Z", "+00:00")) == at
    listing = json.loads(_run(letter, ghost, "sends", "--json").stdout)
    assert listing[0]["service"] == "ghost" and "due" in listing[0]
    off = _run(letter, ghost, "send", EN, "--service", "ghost", "--unschedule")
    assert off.returncode == 0, off.stderr
    assert post["status"] == "draft"
    # Our own schedule and unschedule are not mistaken for an edit made in Ghost.
    _touch(letter)
    again = _run(letter, ghost, "draft", EN, "--service", "ghost")
    assert again.returncode == 0, again.stderr
    assert "Welcome back" in post["html"]


@pytest.mark.parametrize("key, code, message", [
    ("", 2, "GHOST_ADMIN_API_KEY is not set"),
    ("abc123", 2, "not an Admin API key"),
    ("6748592f4b9b7700010f6564", 2, "not an Admin API key"),  # the id alone
    (f"{KEY_ID}:{'0' * 64}", 1, "Ghost refused GHOST_ADMIN_API_KEY"),
])
def test_bad_keys_are_one_line_never_shown(letter, ghost, key, code, message):
    result = _run(letter, ghost, "--debug", "draft", EN, "--service", "ghost", key=key)
    assert result.returncode == code
    assert message in result.stderr
    if key:
        assert key.split(":")[-1] not in result.stdout + result.stderr
    if code == 2:
        assert ghost.log == []
    assert ghost.posts == {}


def test_authors_by_email_or_slug(letter, ghost):
    ok = _run(letter, ghost, "draft", EN, "--service", "ghost",
              ghost_authors="mara@letter.example, editor")
    assert ok.returncode == 0, ok.stderr
    assert next(iter(ghost.posts.values()))["authors"] == [
        {"email": "mara@letter.example"}, {"slug": "editor"}]
    bad = _run(letter, ghost, "draft", EN, "--service", "ghost", "--force",
               ghost_authors="Mara Lind")
    assert bad.returncode == 2 and "ghost_authors" in bad.stderr


def test_tokens_are_what_ghost_accepts_and_the_server_refuses_others(letter, ghost):
    import jwt

    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    assert ghost.tokens and len(set(ghost.tokens)) >= 1
    claims = jwt.decode(ghost.tokens[0], bytes.fromhex(SECRET), algorithms=["HS256"],
                        audience="/admin/")
    assert 0 < claims["exp"] - claims["iat"] <= 300
    now = int(time.time())
    secret = bytes.fromhex(SECRET)

    def token(payload, kid=KEY_ID, key=secret):
        return "Ghost " + jwt.encode(payload, key, algorithm="HS256", headers={"kid": kid})

    assert ghost.check_token(token({"iat": now, "exp": now + 300, "aud": "/admin/"})) is None
    refused = [
        token({"iat": now, "exp": now + 300, "aud": "/v3/admin/"}),  # wrong audience
        token({"iat": now, "exp": now + 3600, "aud": "/admin/"}),  # longer than 5 minutes
        token({"iat": now - 900, "exp": now - 600, "aud": "/admin/"}),  # expired
        token({"iat": now, "aud": "/admin/"}),  # no exp
        token({"iat": now, "exp": now + 300, "aud": "/admin/"}, kid="0" * 24),
        token({"iat": now, "exp": now + 300, "aud": "/admin/"}, key=b"not-the-secret" * 4),
        "Bearer " + jwt.encode({"iat": now, "exp": now + 300, "aud": "/admin/"}, secret,
                               algorithm="HS256", headers={"kid": KEY_ID}),
    ]
    assert all(ghost.check_token(header) for header in refused)


def test_chinese_issue_keeps_every_character(letter, ghost):
    zh = "issues/2025-02-video-models.md"
    result = _run(letter, ghost, "draft", zh, "--service", "ghost")
    assert result.returncode == 0, result.stderr
    post = next(iter(ghost.posts.values()))
    source = (letter / zh).read_text("utf-8")
    title = re.search(r'^title:\s*"?(.+?)"?\s*$', source, re.M).group(1)
    assert post["title"] == title and re.search(r"[\u4e00-\u9fff]{4}", post["html"])
    listing = run_publish("drafts", "--json", cwd=letter)
    assert json.loads(listing.stdout)[0]["service"] == "ghost"


def test_dry_run_writes_nothing(letter, ghost):
    assert _run(letter, ghost, "draft", EN, "--service", "ghost").returncode == 0
    writes = ghost.writes()
    result = _run(letter, ghost, "send", EN, "--service", "ghost", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Would publish the ghost draft" in result.stdout
    assert ghost.writes() == writes
    assert next(iter(ghost.posts.values()))["status"] == "draft"

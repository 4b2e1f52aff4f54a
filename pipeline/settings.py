"""Newsletter settings: defaults, then the settings file, then environment variables.

Settings live in `publish.toml` at the newsletter's root, or under `[tool.publish]` in
its `pyproject.toml`. Each setting can be overridden by `PUBLISH_<NAME>` in the
environment (for example `PUBLISH_BASE_URL`). Secrets are never read from the file.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import InputError

SETTINGS_FILE = "publish.toml"


@dataclass(frozen=True)
class Settings:
    root: Path = field(default_factory=Path.cwd)
    name: str = "My Newsletter"
    sender: str = "My Newsletter <newsletter@example.com>"
    base_url: str = "https://example.com/"
    # Where an issue can be read on the web; `{slug}` is filled in. Empty: the page
    # in the site `publish site` builds ({base_url}issues/{slug}/); "none": no link.
    web_url: str = ""
    # Turns an author handle into a link; `{user}` is filled in. Empty: no link.
    profile_url: str = ""
    unsubscribe_url: str = "{base_url}unsubscribe?token={token}"
    unsubscribe_mailto: str = ""
    postal_address: str = "Postal address not set (publish.toml: postal_address)"
    language: str = "en"
    # A line above each issue's article, e.g. "Hi %%name%%,"; "auto" is the issue
    # language's own greeting; empty: none. An issue's `greeting:` overrides it.
    greeting: str = ""
    service: str = "local"
    state_dir: str = ".publish"
    build_dir: str = "build"
    templates_dir: str = "email_templates"
    # Substack: the publication (https://NAME.substack.com), the account host, the author.
    substack_publication_url: str = ""
    substack_api_url: str = "https://substack.com"
    substack_user_id: str = ""
    substack_audience: str = "everyone"  # everyone | only_paid | founding | only_free
    # Found from the account when empty; the global drafts route needs it.
    substack_publication_id: str = ""
    substack_section: str = ""  # a section's name or id; empty: none
    # Ghost: the site (https://NAME.ghost.io), the newsletter emailed on `publish send`.
    ghost_url: str = ""
    ghost_newsletter: str = ""  # a newsletter's slug; empty: the site's default one
    ghost_email_segment: str = "all"  # all | status:free | status:-free (Ghost's filter)
    ghost_authors: str = ""  # emails or slugs, comma-separated; empty: the key's owner
    buttondown_api_url: str = "https://api.buttondown.com"
    # The zone of `publish send --at` times written without one (IANA name, e.g.
    # Europe/Berlin); empty: such times are refused.
    timezone: str = ""
    http_timeout: str = "30"
    # caniemail features a target client lacks, and warning rule ids, to accept (comma-separated).
    check_accept: str = ""
    # Sending: the local service's Maildir, and the SMTP relay (password: SMTP_PASSWORD).
    outbox_dir: str = "outbox"
    smtp_host: str = "localhost"
    smtp_port: str = "587"
    smtp_security: str = "starttls"  # starttls | ssl | none
    smtp_username: str = ""
    retry_backoff: str = "1"  # seconds before the first retry of a temporary failure
    # Amazon SES (credentials and region the standard AWS ways: environment, profile, role).
    ses_region: str = ""  # empty: the AWS default (AWS_REGION, the profile)
    ses_endpoint_url: str = ""  # empty: AWS's own; set only to test against an emulator
    ses_configuration_set: str = ""  # named on every call, so events flow back
    feedback_queue_url: str = ""  # the SQS queue of the configuration set's events
    sqs_endpoint_url: str = ""  # empty: AWS's own
    soft_bounce_limit: str = "3"  # transient bounces of an address before it is suppressed
    # How a build learns a remote image's size: "fetch" reads its first bytes once (cached),
    # "local" only reads local files and the cache (for offline builds and test runs).
    image_sizes: str = "fetch"
    # The newsletter's web: where `publish site` writes, and the list `publish serve` adds
    # confirmed readers to (subscribers/<name>.csv).
    site_dir: str = "site"
    subscribe_list: str = "main"
    subscribe_per_address: str = "3"  # sign-ups per hour for one address
    subscribe_per_client: str = "20"  # sign-ups per hour from one client address

    @property
    def state_path(self) -> Path:
        return self.root / self.state_dir

    @property
    def http_timeout_seconds(self) -> float:
        return self.number("http_timeout", low=0.1, high=3600)

    @property
    def smtp_port_number(self) -> int:
        port = self.number("smtp_port", low=1, high=65535)
        if port != int(port):
            raise InputError(f"setting 'smtp_port' must be a whole number, not {self.smtp_port!r}")
        return int(port)

    def number(self, key: str, low: float = -math.inf, high: float = math.inf) -> float:
        """A numeric setting, with a clear error when it is not a finite number from `low`
        to `high` (NaN, infinities and negative timeouts would hang or crash far away)."""
        value = getattr(self, key)
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"setting '{key}' must be a number, not {value!r}") from None
        if not (math.isfinite(number) and low <= number <= high):
            span = "a finite number" if math.isinf(low) and math.isinf(high) \
                else f"a number from {low:g} to {high:g}"
            raise InputError(f"setting '{key}' must be {span}, not {value!r}")
        return number

    @property
    def sender_address(self) -> str:
        from email.utils import parseaddr

        return parseaddr(self.sender)[1]


# RFC 2606 names that exist only for examples: mail from them bounces, links lead nowhere.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
_POSTAL_PLACEHOLDERS = {"", "Your street address, City, Country",
                        "Postal address not set (publish.toml: postal_address)"}


def _is_example(hostname: str) -> bool:
    hostname = hostname.lower().rstrip(".")
    return any(hostname == d or hostname.endswith("." + d) for d in EXAMPLE_DOMAINS)


def placeholders(settings: Settings) -> list[tuple[str, str]]:
    """(setting, why) for each setting still holding a scaffold placeholder."""
    from urllib.parse import urlsplit

    found = []
    if _is_example(settings.sender_address.rpartition("@")[2]):
        found.append(("sender", f"the sender {settings.sender_address} is a placeholder "
                      "address: replies bounce and providers reject the mail"))
    if _is_example(urlsplit(settings.base_url).hostname or ""):
        found.append(("base_url", f"base_url {settings.base_url} is a placeholder: images, "
                      "links and the unsubscribe link lead nowhere"))
    if settings.postal_address.strip() in _POSTAL_PLACEHOLDERS:
        found.append(("postal_address", "postal_address is still the placeholder; the law "
                      "(CAN-SPAM) wants the sender's real postal address in the footer"))
    return found


_FILE_KEYS = {f.name for f in fields(Settings)} - {"root"}
# Environment variables that other tools already use for the same thing.
ALIASES = {
    "SMTP_HOST": "smtp_host",
    "SMTP_PORT": "smtp_port",
    "SUBSTACK_PUBLICATION_URL": "substack_publication_url",
    "SUBSTACK_API_URL": "substack_api_url",
    "SUBSTACK_USER_ID": "substack_user_id",
    "SUBSTACK_PUBLICATION_ID": "substack_publication_id",
    "GHOST_URL": "ghost_url",
    "BUTTONDOWN_API_URL": "buttondown_api_url",
}


def find_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding settings; `start` when none does."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.publish]" in pyproject.read_text("utf-8", "replace"):
            return folder
    return start


def _read_file(root: Path) -> tuple[dict, Path | None]:
    from .templates import parsed_toml

    for name, section in ((SETTINGS_FILE, None), ("pyproject.toml", ("tool", "publish"))):
        path = root / name
        if not path.is_file():
            continue
        try:
            data = parsed_toml(path.read_text("utf-8"))  # kept by its text; not changed here
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read settings: {exc}", path) from None
        for key in section or ():
            data = data.get(key, {})
        if section and not data:
            continue
        return data, path
    return {}, None


def load(root: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings for the newsletter folder at `root` (found upwards from the cwd by default)."""
    env = os.environ if env is None else env
    root = find_root(Path(root) if root else Path.cwd())
    data, path = _read_file(root)
    values: dict[str, str] = {}
    for key, value in data.items():
        if key not in _FILE_KEYS:
            raise InputError(
                f"unknown setting '{key}' (known: {', '.join(sorted(_FILE_KEYS))})", path
            )
        if key == "greeting" and isinstance(value, bool):
            value = "auto" if value else ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InputError(f"setting '{key}' must be text", path)
        values[key] = str(value)
    for variable, key in ALIASES.items():
        if env.get(variable):
            values[key] = env[variable]
    for key in _FILE_KEYS:
        env_value = env.get(f"PUBLISH_{key.upper()}")
        if env_value is not None:
            values[key] = env_value
    settings = replace(Settings(root=root), **values)
    if not settings.base_url.endswith("/"):
        settings = replace(settings, base_url=settings.base_url + "/")
    return with_web_url(settings)


def with_web_url(settings: Settings) -> Settings:
    """`web_url` made concrete: empty is the issue's page in the site, "none" is no link."""
    if settings.web_url.strip().lower() == "none":
        return replace(settings, web_url="")
    if not settings.web_url:
        return replace(settings, web_url=settings.base_url.replace("{", "{{").replace(
            "}", "}}") + "issues/{slug}/")
    return settings

"""The `smtp` service: the newsletter's own subscriber list through any SMTP relay.

Drafts are kept locally (as with the `local` service); sending goes through the relay in
`smtp_host`/`smtp_port` (or SMTP_HOST/SMTP_PORT), password from SMTP_PASSWORD only.
"""

from __future__ import annotations

from ..errors import InputError
from ..redact import read_secret
from ..smtp_transport import SmtpTransport
from .local import LocalService


class SmtpService(LocalService):
    name = "smtp"
    max_connections = 32
    reaches_readers = True

    def transport(self, template: object = None) -> SmtpTransport:
        """One connection to the relay; its settings and password checked here."""
        s = self.settings
        if s.smtp_security not in {"starttls", "ssl", "none"}:
            raise InputError(f"smtp_security must be starttls, ssl or none, not "
                             f"{s.smtp_security!r}")
        password = read_secret("SMTP_PASSWORD")
        if s.smtp_username and not password:
            raise InputError("smtp_username is set but SMTP_PASSWORD is not")
        return SmtpTransport(s.smtp_host, s.smtp_port_number, security=s.smtp_security,
                             username=s.smtp_username, password=password,
                             timeout=s.http_timeout_seconds)

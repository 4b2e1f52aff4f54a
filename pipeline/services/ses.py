"""The `ses` service: our own subscriber list through Amazon SES's v2 API, 50 per call.

The issue is rendered once into an inline template (`SendBulkEmail`'s `TemplateContent`,
Handlebars): every brace and backslash of the email is written as a template variable so
the issue's own text can never be read as a template, and each recipient's name, address
and unsubscribe link come in the entry's replacement data (HTML-escaped by us for the
HTML part, inserted raw with triple braces). `List-Unsubscribe` and
`List-Unsubscribe-Post` travel as each entry's replacement headers, `List-Id` as the
template's. The configuration set is named on every call so events flow back
(`publish feedback`).

SES has no idempotency key: boto3's own retries are switched off, and the ledger decides
what happens to the recipients of a call that got no answer (in doubt, never re-sent).
Credentials and region come the standard AWS ways; none is read, printed or stored here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError, PublishError
from ..message import MessageTemplate
from ..render import split_tokens
from ..transports import (
    Answer,
    Entry,
    Fatal,
    InDoubt,
    Rejected,
    Throttled,
    Unexpected,
    Unreachable,
    describe,
)
from .local import LocalService

BATCH = 50  # SendBulkEmail's limit of entries per call
# Per-entry statuses (API reference, BulkEmailEntryResult): taken, refused, not now,
# slow down, and those that say nothing more can be sent now (the send stops).
SENT, REFUSED = {"SUCCESS"}, {"MESSAGE_REJECTED", "INVALID_PARAMETER", "FAILED"}
LATER, SLOWER = {"TRANSIENT_FAILURE"}, {"ACCOUNT_THROTTLED"}
# Errors of the whole call: slow down; nothing can be sent now; the request was refused.
THROTTLING = {"TooManyRequestsException", "ThrottlingException", "Throttling"}
STOPPING = {"LimitExceededException", "AccountSuspendedException", "SendingPausedException",
            "MailFromDomainNotVerifiedException", "NotFoundException", "BadRequestException",
            "AccessDeniedException", "UnrecognizedClientException",
            "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredTokenException"}
FIELDS = ("name", "email", "unsubscribe_url")
RECIPIENT_TAG = "publish-recipient"


@dataclass(frozen=True)
class Limits:
    """The account's sending limits, from GetAccount."""

    max_rate: float  # recipients per second
    remaining_today: int  # Max24HourSend - SentLast24Hours (-1: unlimited)


def template_text(text: str, *, escape_html: bool) -> str:
    """`text` (with %%token%% placeholders) as an SES template: every literal brace and
    backslash becomes a variable, every placeholder a triple-brace variable (raw; the
    value is escaped by us for HTML)."""
    out = []
    for index, segment in enumerate(split_tokens(text)):
        if index % 2:
            name = segment if segment in FIELDS else "missing"
            out.append(f"{{{{{{{name}_html}}}}}}" if escape_html else f"{{{{{{{name}}}}}}}")
        else:
            out.append(segment.replace("\\", "\0b").replace("{", "\0l").replace("}", "\0r")
                       .replace("\0b", "{{{b}}}").replace("\0l", "{{{l}}}")
                       .replace("\0r", "{{{r}}}"))
    return "".join(out)


def replacement_data(fields: dict[str, str]) -> str:
    data = {}
    for name in FIELDS:
        value = fields.get(name, "")
        data[name], data[f"{name}_html"] = value, html.escape(value)
    return json.dumps(data, ensure_ascii=False)


def unsubscribe_headers(url: str, mailto: str) -> list[dict[str, str]]:
    targets = [f"<{url}>"] if url.startswith("https://") else []
    if mailto:
        targets.append(f"<mailto:{mailto}>")
    headers = [{"Name": "List-Unsubscribe", "Value": ", ".join(targets)}] if targets else []
    if url.startswith("https://"):
        headers.append({"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"})
    return headers


def client(settings, service: str):
    """A boto3 client with its retries off (a repeated send is a duplicate); credentials
    and region the standard AWS ways."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InputError("the ses service needs boto3: pip install 'publish[ses]'") from None
    endpoint = settings.ses_endpoint_url if service == "sesv2" else settings.sqs_endpoint_url
    timeout = settings.http_timeout_seconds
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=timeout,
                    read_timeout=timeout, max_pool_connections=32)
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session().client(
            service, region_name=settings.ses_region or None, endpoint_url=endpoint or None,
            config=config)
    except BotoCoreError as exc:
        if type(exc).__name__ == "NoRegionError":
            raise InputError("no AWS region: set ses_region, AWS_DEFAULT_REGION or a "
                             "profile's region") from None
        raise InputError(f"cannot set up the AWS client: {describe(exc)}") from None
    except ValueError as exc:  # a malformed endpoint URL
        raise InputError(f"cannot set up the AWS client: {exc}") from None


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class SesService(LocalService):
    """Drafts kept locally; sending in batches of 50 through SES."""

    name = "ses"
    per_recipient = True
    can_send_test = True
    can_schedule = True
    batch_size = BATCH
    max_connections = 32
    reaches_readers = True
    renders_itself = True  # one template per send, each entry's values filled in by SES

    def transport(self, template: MessageTemplate | None = None) -> SesTransport:
        if not self.settings.ses_configuration_set.strip():
            raise InputError("the ses service needs ses_configuration_set (publish.toml or "
                             "PUBLISH_SES_CONFIGURATION_SET) so bounces and complaints "
                             "come back")
        return SesTransport(client(self.settings, "sesv2"), template,
                            self.settings.ses_configuration_set.strip())

    def limits(self) -> Limits:
        """GetAccount's sending quota: the rate and what is left of the last 24 hours."""
        try:
            quota = client(self.settings, "sesv2").get_account()["SendQuota"]
        except Exception as exc:
            raise PublishError(f"SES GetAccount failed: {_why(exc)}") from None
        limit, sent = float(quota.get("Max24HourSend", -1)), float(quota.get("SentLast24Hours", 0))
        remaining = -1 if limit < 0 else max(int(limit - sent), 0)
        return Limits(float(quota.get("MaxSendRate", 1)), remaining)


class SesTransport:
    """One sesv2 client; `deliver_batch` makes one SendBulkEmail call."""

    batch_size = BATCH

    def __init__(self, sesv2, template: MessageTemplate | None, configuration_set: str):
        self.ses, self.template, self.configuration_set = sesv2, template, configuration_set

    def _content(self) -> dict:
        email = self.template.email
        subject = self.template.subject_text
        return {"Template": {
            "TemplateContent": {"Subject": template_text(subject, escape_html=False),
                                "Html": template_text(email.html, escape_html=True),
                                "Text": template_text(email.text, escape_html=False)},
            "TemplateData": json.dumps({"l": "{", "r": "}", "b": "\\", "missing": "",
                                        "missing_html": ""}),
            "Headers": [{"Name": "List-Id", "Value": self.template.list_id}]}}

    def deliver_batch(self, sender: str, entries: Sequence[Entry]) -> list[Answer]:
        """One call for up to 50 entries; an address SES cannot carry (a non-ASCII local
        part) is refused without being sent."""
        answers: list[Answer | None] = [None] * len(entries)
        calls, positions = [], []
        for index, entry in enumerate(entries):
            if not entry.address.isascii():
                answers[index] = Answer("failed", "SES cannot send to a non-ASCII local part")
                continue
            calls.append({
                "Destination": {"ToAddresses": [entry.address]},
                "ReplacementEmailContent": {"ReplacementTemplate": {
                    "ReplacementTemplateData": replacement_data(dict(entry.fields))}},
                "ReplacementHeaders": unsubscribe_headers(
                    entry.fields.get("unsubscribe_url", ""), self.template.mailto),
                # Comes back in every event of the message: a delivery settles a recipient
                # whose call got no answer (`publish feedback`).
                "ReplacementTags": [{"Name": RECIPIENT_TAG, "Value": str(entry.recipient_id)}]})
            positions.append(index)
        if calls:
            for index, answer in zip(positions, self._call(calls), strict=True):
                answers[index] = answer
        return [answer for answer in answers if answer is not None]

    def _call(self, calls: list[dict]) -> list[Answer]:
        try:
            response = self.ses.send_bulk_email(
                FromEmailAddress=self.template.sender, DefaultContent=self._content(),
                BulkEmailEntries=calls, ConfigurationSetName=self.configuration_set)
            results = response["BulkEmailEntryResults"]
        except Exception as exc:
            raise _call_error(exc) from None
        if not isinstance(results, list) or len(results) != len(calls):
            raise Unexpected(f"SES answered {len(results)} results for {len(calls)} entries; "
                             "stopped", handed_over=True)
        return [_answer(result) for result in results]

    def close(self) -> None:
        close = getattr(self.ses, "close", None)
        if close is not None:
            close()


def _answer(result: dict) -> Answer:
    status, why = result.get("Status", ""), result.get("Error") or ""
    text = f"{status}: {why}" if why else status
    if status in SENT and result.get("MessageId"):
        return Answer("sent", f"SES {result['MessageId']}", result["MessageId"])
    if status in REFUSED:
        return Answer("failed", text)
    if status in LATER:
        return Answer("retry", text)
    if status in SLOWER:
        return Answer("throttled", text)
    if status in SENT:  # taken, but without the id that feedback needs: cannot be sure
        return Answer("failed", "SES answered SUCCESS without a MessageId")
    return Answer("halt", text)


def _call_error(exc: BaseException) -> Exception:
    """The transport error for a SendBulkEmail call that raised."""
    from botocore import exceptions as aws

    code = error_code(exc)
    if isinstance(exc, aws.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in THROTTLING or status == 429:
            return Throttled(f"SES: {code or status}, slowing down")
        if code == "MessageRejected":
            return Rejected(f"SES MessageRejected: {_why(exc)}")
        if code in STOPPING or 400 <= status < 500:
            return Fatal(f"SES refused the call: {_why(exc)}")
        return Unexpected(f"SES answered {status} {code or 'an error'}: it may have sent "
                          "the messages; stopped", handed_over=True)
    if isinstance(exc, aws.NoCredentialsError | aws.PartialCredentialsError):
        return Fatal("no AWS credentials: set them the standard AWS ways (environment, "
                     "profile, instance role)")
    if isinstance(exc, aws.NoRegionError):
        return Fatal("no AWS region: set ses_region, AWS_REGION or a profile's region")
    if isinstance(exc, aws.EndpointConnectionError | aws.ConnectTimeoutError):
        return Unreachable(f"cannot reach SES: {describe(exc)}")
    if isinstance(exc, aws.ReadTimeoutError | aws.ConnectionClosedError):
        return InDoubt(f"no answer from SES ({type(exc).__name__}): it may have sent them")
    return Unexpected(f"unexpected error from SES: {describe(exc)}", handed_over=True)


def _why(exc: BaseException) -> str:
    code = error_code(exc)
    message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message", "")
    return f"{code}: {message}"[:300] if code else describe(exc)

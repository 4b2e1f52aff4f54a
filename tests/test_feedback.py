"""`publish feedback`: SES events through a real SNS topic and SQS queue (moto's standalone
server on loopback), after a real send to the SES emulator (tests/ses_server.py).

The events are written as SES publishes them for a configuration set (eventType Bounce,
Complaint, Delivery with `mail.messageId` and `mail.tags`), published to the topic, and
delivered by it to the queue wrapped in SNS notifications, duplicated and out of order.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import pytest

from tests.ses_server import Emulator, SesProxy, aws_env, node_missing
from tests.test_send import write_list
from tests.test_ses import TINY, publish, readers, send_ses

pytestmark = pytest.mark.skipif(node_missing(), reason="aws-ses-v2-local not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def ses():
    emulator = Emulator()
    proxy = SesProxy(emulator)
    yield proxy
    proxy.stop()
    emulator.stop()


def aws(kind: str, moto: str, proxy: SesProxy):
    env = aws_env(proxy)
    return boto3.client(kind, endpoint_url=moto, region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def event(kind: str, message_id: str, recipient_id: str, address: str, **part) -> dict:
    """An SES event as a configuration set publishes it (AWS SES developer guide, "Contents
    of event data that Amazon SES publishes to Amazon SNS")."""
    mail = {"timestamp": "2025-02-01T10:00:00.000Z", "source": "letters@pixels.example",
            "messageId": message_id, "destination": [address],
            "tags": {"ses:configuration-set": ["newsletter-events"],
                     "publish-recipient": [recipient_id]}}
    stamp = part.pop("timestamp", "2025-02-01T10:00:05.000Z")
    if kind == "Bounce":
        body = {"bounceType": part["bounce_type"], "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": address, "action": "failed",
                                       "status": "5.1.1", "diagnosticCode": "smtp; 550 no"}],
                "timestamp": stamp, "feedbackId": part["feedback_id"]}
    elif kind == "Complaint":
        body = {"complainedRecipients": [{"emailAddress": address}], "timestamp": stamp,
                "feedbackId": part["feedback_id"], "complaintFeedbackType": "abuse"}
    else:
        body = {"timestamp": stamp, "processingTimeMillis": 500, "recipients": [address],
                "smtpResponse": "250 ok", "reportingMTA": "a8-1.smtp-out.amazonses.com"}
    return {"eventType": kind, "mail": mail, kind.lower(): body}


def test_feedback_suppresses_the_right_addresses_once_and_settles_the_in_doubt(
        tmp_path, moto, ses):
    from tests.conftest import copy_sample_newsletter

    letter = copy_sample_newsletter(tmp_path / "letter")
    (letter / TINY).write_text("---\ntitle: Short\ndate: 2025-02-01\nlang: en\n---\n\nHello.\n",
                               "utf-8")
    write_list(letter, readers(60))
    sqs, sns = aws("sqs", moto, ses), aws("sns", moto, ses)
    queue = sqs.create_queue(QueueName=f"events-{time.monotonic_ns()}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    topic = sns.create_topic(Name=f"events-{time.monotonic_ns()}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    more = {"PUBLISH_FEEDBACK_QUEUE_URL": queue, "PUBLISH_SQS_ENDPOINT_URL": moto}

    # A send whose first call (50 readers) gets no answer: they are in doubt.
    assert publish(letter, ses, "draft", TINY).returncode == 0
    ses.hold, ses.hold_calls = threading.Event(), 1
    _, report = send_ses(letter, ses, PUBLISH_HTTP_TIMEOUT="1")
    assert len(report["in_doubt"]) == 50 and report["sent"] == 10
    ses.hold.set()
    time.sleep(0.3)
    ids = {m["destination"]["to"][0]: m["messageId"] for m in ses.emulator.emails()}
    tags = {e["Destination"]["ToAddresses"][0]: e["ReplacementTags"][0]["Value"]
            for call in ses.calls for e in call["BulkEmailEntries"]}

    def about(n: int, kind: str, **part) -> dict:
        address = f"reader{n}@example.org"
        return event(kind, ids[address], tags[address], address, **part)

    events = [about(n, "Delivery") for n in range(5)]  # five of those in doubt, delivered
    events += [about(51, "Complaint", feedback_id="c-51"),
               about(52, "Bounce", bounce_type="Permanent", feedback_id="b-52"),
               about(55, "Delivery", timestamp="2025-02-01T10:00:01.000Z")]
    events += [about(53, "Bounce", bounce_type="Transient", feedback_id=f"t-53-{i}")
               for i in range(3)]
    events += [about(54, "Bounce", bounce_type="Transient", feedback_id=f"t-54-{i}")
               for i in range(2)]
    noisy = events + events[5:9] + [about(55, "Complaint", feedback_id="c-55")]
    random.Random(7).shuffle(noisy)  # duplicated, and a complaint before its delivery
    for item in noisy:
        sns.publish(TopicArn=topic, Message=json.dumps(item))
    sqs.send_message(QueueUrl=queue, MessageBody="not an event")

    taken = publish(letter, ses, "feedback", "--once", "--json", **more)
    assert taken.returncode == 0, taken.stderr
    first = json.loads(taken.stdout)
    suppressed = {s["email"]: s["reason"] for s in first["suppressed"]}
    assert set(suppressed) == {"reader51@example.org", "reader52@example.org",
                               "reader53@example.org", "reader55@example.org"}
    assert "complaint" in suppressed["reader51@example.org"]
    assert "bounce Permanent" in suppressed["reader52@example.org"]
    assert "3 transient bounces" in suppressed["reader53@example.org"]
    assert first["settled"] == 5 and first["repeated"] == 4 and first["unreadable"] == 1
    listed = (letter / "subscribers" / "suppressed.csv").read_text("utf-8")
    assert "reader52@example.org,,bounced,2025-02-01,SES bounce Permanent" in listed
    assert "reader54@example.org" not in listed

    # The same events again: nothing changes.
    for item in events:
        sns.publish(TopicArn=topic, Message=json.dumps(item))
    again = json.loads(publish(letter, ses, "feedback", "--once", "--json", **more).stdout)
    assert again["suppressed"] == [] and again["settled"] == 0 and not again["events"]
    assert (letter / "subscribers" / "suppressed.csv").read_text("utf-8") == listed

    sends = json.loads(publish(letter, ses, "sends", "--json").stdout)
    assert sends[0]["feedback"] == {"delivered": 6, "bounced": 1, "complained": 2,
                                    "soft-bounced": 2}
    assert sends[0]["counts"]["in_doubt"] == 45 and sends[0]["counts"]["sent"] == 15

    # The next send skips every suppressed address.
    (letter / "issues" / "next.md").write_text(
        "---\ntitle: Next\ndate: 2025-03-01\nlang: en\n---\n\nAgain.\n", "utf-8")
    assert publish(letter, ses, "draft", "issues/next.md").returncode == 0
    before = len(ses.emulator.emails())
    result = publish(letter, ses, "send", "issues/next.md", "--service", "ses", "--yes",
                     "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped"] == {"suppressed": 4}
    sent_to = {m["destination"]["to"][0] for m in ses.emulator.emails()[before:]}
    assert len(sent_to) == 56 and not sent_to & set(suppressed)


def test_feedback_without_a_queue_is_one_clear_line(tmp_path, ses):
    from tests.conftest import copy_sample_newsletter

    letter = copy_sample_newsletter(tmp_path / "letter")
    result = publish(letter, ses, "feedback", "--once")
    assert result.returncode == 2 and "feedback_queue_url" in result.stderr
    assert "Traceback" not in result.stderr


"""Subscriber lists: every import format, rejected rows with their lines, suppression wins."""

from __future__ import annotations

import csv
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import subscribers
from tests.conftest import run_publish


def _rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_old_substack_dashboard_exports(tmp_path):
    signups = tmp_path / "signups.csv"
    signups.write_text(
        "email,active_subscription,expiry,email_disabled,created_at\n"
        "Ann@Example.COM,true,,false,2021-03-01T10:00:00Z\n"
        "off@example.com,false,,true,2021-04-01T10:00:00Z\n"
        "not-an-address,false,,false,2021-05-01\n"
        "x1234@deletion-request.substack.com,false,,false,2021-06-01\n", "utf-8")
    paid = tmp_path / "paid.csv"
    paid.write_text(
        "email,expiry,email_disabled,stripe_connected_customer_id,type\n"
        "ann@example.com,2026-01-01,false,cus_1,paid\n"
        "gift@example.org,,false,,gift\n", "utf-8")
    dest = tmp_path / "main.csv"
    first = subscribers.import_file(signups, dest)
    assert (first.added, len(first.rejected)) == (3, 1)
    assert first.rejected[0].line == 4 and first.rejected[0].value == "not-an-address"
    second = subscribers.import_file(paid, dest)
    assert (second.added, second.unchanged) == (1, 1)
    rows = {r["email"]: r for r in _rows(dest)}
    assert rows["Ann@example.com"]["status"] == "active"  # domain lower-cased, local part kept
    assert rows["off@example.com"]["status"] == "unsubscribed"
    assert rows["x1234@deletion-request.substack.com"]["status"] == "unsubscribed"
    assert rows["gift@example.org"]["substack_type"] == "gift"


def test_new_labelled_substack_export_in_utf16_with_semicolons(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text(
        "Email;Name;Type;Start date;Cancel date;Country\n"
        "li@example.cn;李雷;free;2024-01-02;;CN\n"
        "gone@example.com;Gone;paid;2023-01-01;2024-06-01;US\n"
        "\"multi\nline\"@example.com;Broken;free;2024-01-01;;US\n", "utf-16")
    report = subscribers.import_file(source, tmp_path / "main.csv")
    assert report.added == 2
    assert [r.line for r in report.rejected] == [4]  # the line the row starts on
    rows = {r["email"]: r for r in _rows(tmp_path / "main.csv")}
    assert rows["li@example.cn"]["name"] == "李雷"
    assert rows["li@example.cn"]["created_at"] == "2024-01-02"
    assert rows["gone@example.com"]["status"] == "unsubscribed"


def test_plain_list_latin1_and_bom(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes("café@example.fr\nbob@EXAMPLE.org\n\nBob@example.org\n".encode("latin-1"))
    report = subscribers.import_file(plain, tmp_path / "main.csv")
    assert report.added == 2 and report.duplicates == 1
    emails = [r["email"] for r in _rows(tmp_path / "main.csv")]
    assert emails == ["café@example.fr", "bob@example.org"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffemail,name\nzoe@example.org,Zoë\n".encode())
    assert subscribers.import_file(bom, tmp_path / "main.csv").added == 1


def test_fifty_spellings_of_one_address_import_once(tmp_path):
    source = tmp_path / "cases.csv"
    spellings = []
    base = "mixedcase@example.org"
    for n in range(50):
        spellings.append("".join(c.upper() if (n >> (i % 6)) & 1 else c
                                 for i, c in enumerate(base)))
    source.write_text("email\n" + "\n".join(spellings) + "\n", "utf-8")
    report = subscribers.import_file(source, tmp_path / "main.csv")
    assert report.added == 1 and report.duplicates == 49


def test_missing_email_column_is_a_clear_error(tmp_path):
    source = tmp_path / "x.csv"
    source.write_text("name,phone\nAnn,123\n", "utf-8")
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    result = run_publish("subscribers", "import", str(source), cwd=tmp_path)
    assert result.returncode == 2
    assert "x.csv:1: no 'email' column" in result.stderr


def test_cli_import_count_list_unsubscribe(tmp_path):
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    source = tmp_path / "in.csv"
    source.write_text("email,name\na@example.org,A\nb@example.org,B\nbad\n", "utf-8")
    result = run_publish("subscribers", "import", str(source), cwd=tmp_path)
    assert "2 added" in result.stdout and "1 rejected" in result.stdout
    assert "in.csv:4: 'bad'" in result.stderr
    assert "2 in main: 2 active" in run_publish("subscribers", "count", cwd=tmp_path).stdout
    result = run_publish("subscribers", "unsubscribe", "A@example.org", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert run_publish("subscribers", "list", "--status", "active",
                       cwd=tmp_path).stdout.split("\t")[0] == "b@example.org"
    assert subscribers.suppressed(tmp_path) == {"a@example.org"}


addresses = st.from_regex(r"[a-z]{1,8}@[a-z]{1,6}\.(org|com)", fullmatch=True)


@settings(deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(addresses, st.sampled_from(subscribers.STATUSES),
                               st.booleans()), max_size=25))
def test_suppressed_and_inactive_are_never_in_the_audience(tmp_path_factory, rows):
    """Whatever the list says, an address that is suppressed or not active is not sent to."""
    from pipeline.send import classify

    folder = tmp_path_factory.mktemp("list")
    (folder / "subscribers").mkdir()
    lines = ["email,name,status,created_at"] + [f"{e},,{s}," for e, s, _ in rows]
    (folder / "subscribers" / "main.csv").write_text("\n".join(lines) + "\n", "utf-8")
    lines = ["email"] + [e.upper() for e, _, suppress in rows if suppress]
    (folder / "subscribers" / "suppressed.csv").write_text("\n".join(lines) + "\n", "utf-8")
    suppressed = subscribers.suppressed(folder)
    audience = {item.key for _, item in subscribers.read(folder / "subscribers" / "main.csv")
                if classify(item, suppressed)[0] == "pending"}
    suppressed_rows = {e for e, _, suppress in rows if suppress}
    for email in audience:
        assert email not in suppressed_rows
        assert any(e == email and s == "active" for e, s, _ in rows)
    assert not suppressed_rows & audience


# rewriting a list keeps what it does not mean to change ---------------------------------

MIXED = ("email,name,status,created_at,Notes\r\n"
         "a@example.org,Ann,active,2024-01-01\r\n"
         "not-an-email,,active,\r\n"
         "b@example.org,B,paused\r\n"
         "\r\n"
         "z@example.org,\"Zoë, \"\"the\"\" reader\",active,,\"two\r\nlines\"\r\n"
         "d@example.org,D,active,2024-02-02,x\r\n"
         "e@example.org,É,active,")  # no newline at the end


def _letter(tmp_path, text: str = MIXED):
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    (tmp_path / "subscribers").mkdir()
    path = tmp_path / "subscribers" / "main.csv"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_unsubscribe_changes_one_row_and_keeps_every_other_byte(tmp_path):
    path = _letter(tmp_path)
    before = path.read_bytes()
    result = run_publish("subscribers", "unsubscribe", "D@Example.org", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before.replace(b"d@example.org,D,active,2024-02-02,x",
                                               b"d@example.org,D,unsubscribed,2024-02-02,x")
    counts = run_publish("subscribers", "count", "--json", cwd=tmp_path)
    import json

    by_status = json.loads(counts.stdout)["by_status"]
    assert by_status == {"active": 3, "invalid": 1, "paused": 1, "unsubscribed": 1}
    # the row without a trailing newline can be changed too, and still has none after
    run_publish("subscribers", "unsubscribe", "e@example.org", cwd=tmp_path)
    assert path.read_bytes().endswith("e@example.org,É,unsubscribed,".encode())


def test_import_keeps_invalid_and_unknown_rows_and_says_so(tmp_path):
    path = _letter(tmp_path)
    before = path.read_bytes()
    source = tmp_path / "in.csv"
    source.write_text("email,name,status\nnew@example.org,New,active\n"
                      "B@example.org,,active\nA@EXAMPLE.ORG,,unsubscribed\n", "utf-8")
    result = run_publish("subscribers", "import", str(source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 added, 1 updated, 1 unchanged" in result.stdout
    assert "main.csv:3: 'not-an-email'" in result.stderr
    assert "main.csv:4: 'b@example.org': unknown status 'paused'" in result.stderr
    after = path.read_bytes()
    changed = before.replace(b"a@example.org,Ann,active,2024-01-01",
                             b"a@example.org,Ann,unsubscribed,2024-01-01")
    assert after == changed + b"\r\nnew@example.org,New,active,,\r\n"


def test_dry_run_changes_nothing_and_reports_the_same(tmp_path):
    import json

    path = _letter(tmp_path)
    before = path.read_bytes()
    source = tmp_path / "in.csv"
    source.write_text("email\nnew@example.org\nd@example.org\n", "utf-8")
    dry = json.loads(run_publish("subscribers", "import", str(source), "--dry-run", "--json",
                                 cwd=tmp_path).stdout)
    assert path.read_bytes() == before
    assert not (tmp_path / "subscribers" / "suppressed.csv").exists()
    result = run_publish("subscribers", "unsubscribe", "d@example.org", "--dry-run",
                         cwd=tmp_path)
    assert "would be marked unsubscribed" in result.stdout
    assert path.read_bytes() == before
    assert not (tmp_path / "subscribers" / "suppressed.csv").exists()
    real = json.loads(run_publish("subscribers", "import", str(source), "--json",
                                  cwd=tmp_path).stdout)
    assert {**dry, "dry_run": False} == real and dry["added"] == 1


def test_an_unterminated_quote_costs_one_row_not_the_rest(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('email,name\na@example.org,"Ann\nb@example.org,B\nc@example.org,C\n'
                      'd@example.org,"Dee "" Quote",x\n', "utf-8")
    report = subscribers.import_file(source, tmp_path / "main.csv")
    assert (report.added, [r.line for r in report.rejected]) == (3, [2])
    assert "never closed" in report.rejected[0].reason
    emails = [r["email"] for r in _rows(tmp_path / "main.csv")]
    assert emails == ["b@example.org", "c@example.org", "d@example.org"]
    # a quote that is closed by a stray quote rows later swallows nothing either
    source.write_text('email,name\na@example.org,"Ann\nb@example.org,B\nc@example.org,C"\n',
                      "utf-8")
    report = subscribers.import_file(source, tmp_path / "other.csv")
    assert report.added == 2 and [r.line for r in report.rejected] == [2]


def test_a_200k_character_field_rejects_its_row_only(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("email,name\na@example.org,A\nb@example.org," + "x" * 200_000
                      + "\nc@example.org,C\n", "utf-8")
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    result = run_publish("subscribers", "import", str(source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 added" in result.stdout and "1 rejected" in result.stdout
    assert "in.csv:3:" in result.stderr and "field larger than field limit" in result.stderr
    assert len(result.stderr) < 2000  # the field itself is not echoed


def test_real_substack_export_headers_are_normalised(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text(
        "Email,Active Subscription,Expiry,Email disabled,Subscription date,Plan\n"
        "on@example.org,true,,false,2022-01-01,free\n"
        "off@example.org,false,,TRUE,2022-02-02,free\n"
        "Gone@Example.org,false,,Yes,2022-03-03,free\n", "utf-8")
    report = subscribers.import_file(source, tmp_path / "main.csv")
    assert report.added == 3
    rows = {r["email"]: r for r in _rows(tmp_path / "main.csv")}
    assert rows["on@example.org"]["status"] == "active"
    assert rows["off@example.org"]["status"] == "unsubscribed"
    assert rows["Gone@example.org"]["status"] == "unsubscribed"
    assert rows["off@example.org"]["created_at"] == "2022-02-02"
    other = tmp_path / "other.csv"
    other.write_text("EMAIL_ADDRESS;Full Name;Unsubscribed at\nx@example.org;X;\n"
                     "y@example.org;Y;2024-01-01\n", "utf-8")
    subscribers.import_file(other, tmp_path / "main.csv")
    rows = {r["email"]: r for r in _rows(tmp_path / "main.csv")}
    assert (rows["x@example.org"]["name"], rows["x@example.org"]["status"]) == ("X", "active")
    assert rows["y@example.org"]["status"] == "unsubscribed"


def test_a_plain_list_gets_a_header_and_keeps_its_lines(tmp_path):
    path = _letter(tmp_path, "a@example.org\nb@example.org\n")
    run_publish("subscribers", "unsubscribe", "b@example.org", cwd=tmp_path)
    assert path.read_text("utf-8") == ("email,name,status,created_at\na@example.org\n"
                                       "b@example.org,,unsubscribed\n")


def test_a_utf16_list_stays_utf16(tmp_path):
    path = tmp_path / "main.csv"
    path.write_bytes("email;name\nli@example.cn;李雷\n".encode("utf-16"))
    source = tmp_path / "in.csv"
    source.write_text("email,name\nwang@example.cn,王\n", "utf-8")
    subscribers.import_file(source, path)
    assert path.read_bytes().decode("utf-16") == (
        "email;name;status;created_at\nli@example.cn;李雷\nwang@example.cn;王;active;\n")


def test_one_validator_for_import_and_send_idn_and_utf8(tmp_path):
    from pipeline.send import classify

    source = tmp_path / "in.csv"
    source.write_text("email\nuser@xn--bcher-kva.de\nuser@BÜCHER.de\nCafé@example.org\n"
                      "chloé@exämple.fr\nbad@@example.org\n", "utf-8")
    report = subscribers.import_file(source, tmp_path / "main.csv")
    assert (report.added, report.duplicates, len(report.rejected)) == (3, 1, 1)
    stored = [item for _, item in subscribers.read(tmp_path / "main.csv")]
    assert [s.email for s in stored] == ["user@bücher.de", "Café@example.org",
                                         "chloé@exämple.fr"]
    for item in stored:  # what is stored reads back as itself, and is sent to
        assert subscribers.normalize_email(item.email) == item.email
        assert classify(item, set())[0] == "pending"


def test_odd_paths_get_one_line(tmp_path):
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for source in (fifo, tmp_path, tmp_path / "missing.csv"):
        result = run_publish("subscribers", "import", str(source), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    # a symlinked list is changed where it lives; the link stays a link
    real = tmp_path / "elsewhere.csv"
    real.write_text("email,name,status,created_at\na@example.org,A,active,\n", "utf-8")
    (tmp_path / "subscribers").mkdir()
    (tmp_path / "subscribers" / "main.csv").symlink_to(real)
    result = run_publish("subscribers", "unsubscribe", "a@example.org", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "subscribers" / "main.csv").is_symlink()
    assert real.read_text("utf-8").endswith("a@example.org,A,unsubscribed,\n")


def test_progress_shows_on_a_terminal_and_not_in_a_pipe(tmp_path):
    import pty
    import subprocess
    import sys

    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    source = tmp_path / "big.csv"
    source.write_text("email\n" + "".join(f"r{n}@example.org\n" for n in range(8_000)),
                      "utf-8")
    piped = run_publish("subscribers", "import", str(source), "--dry-run", cwd=tmp_path)
    assert piped.returncode == 0 and "rows/s" not in piped.stderr
    leader, follower = pty.openpty()
    run = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "subscribers", "import",
                            str(source), "--dry-run"], cwd=tmp_path, stdin=follower,
                           stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert run.wait(timeout=120) == 0
    assert b"Reading  " in seen and b"rows/s" in seen
    assert b"Would import" in seen and b"8000 added" in seen


def test_a_send_dry_run_shows_its_progress_reading_a_long_list(tmp_path):
    """`send --dry-run` reads the whole list before it can say anything: on a terminal it
    says how far it got, as an import does; in a pipe it stays quiet."""
    import pty
    import subprocess
    import sys

    from tests.conftest import copy_sample_newsletter

    letter = copy_sample_newsletter(tmp_path / "letter")
    rows = "".join(f"reader{n}@example.org,Reader {n},active,\n" for n in range(20_000))
    (letter / "subscribers" / "main.csv").write_text(
        "email,name,status,created_at\n" + rows, "utf-8")
    command = ["send", "issues/2025-01-ai-art.md", "--dry-run", "--redraft"]
    piped = run_publish(*command, cwd=letter)
    assert piped.returncode == 0, piped.stderr
    assert "rows/s" not in piped.stderr and "20000" in piped.stdout
    leader, follower = pty.openpty()
    run = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *command], cwd=letter,
                           stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert run.wait(timeout=300) == 0, seen.decode("utf-8", "replace")[-2000:]
    assert b"Reading  " in seen and b"rows/s" in seen
    assert b"20000" in seen

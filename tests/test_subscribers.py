"""Subscriber lists: every import format, rejected rows with their lines, suppression wins."""

from __future__ import annotations

import csv

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
    assert [r.line for r in report.rejected] == [5]  # the row that started on line 4 ends on 5
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

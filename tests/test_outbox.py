"""The local outbox is made by whichever process writes first, and two that start at once
(two sends, a send and `publish serve`) both get their message in."""

from __future__ import annotations

import mailbox
import multiprocessing

from pipeline.transports import MaildirTransport


def _deliver(folder: str, index: int, start: multiprocessing.Barrier) -> None:
    from pathlib import Path

    start.wait()
    MaildirTransport(Path(folder)).deliver(
        "letter@example.org", f"r{index}@example.org",
        f"Subject: {index}\r\n\r\nbody {index}\r\n".encode())


def test_processes_making_the_outbox_at_once_all_deliver(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        folder = tmp_path / f"outbox{attempt}"
        start = context.Barrier(8)
        workers = [context.Process(target=_deliver, args=(str(folder), i, start))
                   for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0] * 8
        subjects = sorted(int(m["Subject"]) for m in mailbox.Maildir(folder, create=False))
        assert subjects == list(range(8))

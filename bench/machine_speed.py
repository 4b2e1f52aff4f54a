"""How fast this machine runs Python right now: a fixed piece of work, timed.

This VM's speed moves in phases of seconds: the same loop takes 33-36 ms in one and
60-65 ms in the next, with no other process running and no steal time reported. A
figure of a few tens of milliseconds means little without the speed it was taken at, so
the benches that time short work time this reference next to it, turn by turn, and report
both and their ratio.
"""

from __future__ import annotations

import re
import time

_WORDS = re.compile(r"[a-z]+")
_TEXT = " ".join(f"word{n % 97} <b>x</b> {n}" for n in range(400))


def reference_work() -> int:
    """Interpreter-bound work of the kinds a build does: loops, dicts, strings, a regex."""
    counts: dict[str, int] = {}
    for _ in range(12):
        for word in _WORDS.findall(_TEXT):
            counts[word] = counts.get(word, 0) + 1
        total = 0
        for n in range(6000):
            total += n * n % 7
        "-".join(sorted(counts)).split("-")
    return total + len(counts)


def reference_cpu() -> float:
    """CPU seconds of one `reference_work`."""
    start = time.process_time()
    reference_work()
    return time.process_time() - start

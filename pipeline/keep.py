"""Results kept in memory for the short texts an email repeats (styles, attribute values,
code blocks): a build meets each a few hundred times, and a preview save meets the last
save's again."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, update_wrapper


def kept_while_short(maxsize: int, limit: int = 1024) -> Callable[[Callable], Callable]:
    """`lru_cache(maxsize)`, except that a call with a text argument longer than `limit`
    (a data: URI, a long code block) is worked out each time and never kept: what is held
    stays bounded in size as well as in number. The result has `cache_info`, `cache_clear`
    and `__wrapped__` as lru_cache's does."""
    def decorate(function: Callable) -> Callable:
        kept = lru_cache(maxsize=maxsize)(function)

        def call(*args):
            if any(isinstance(arg, str) and len(arg) > limit for arg in args):
                return function(*args)
            return kept(*args)

        update_wrapper(call, function)
        call.cache_info, call.cache_clear = kept.cache_info, kept.cache_clear
        return call
    return decorate

"""Bulk work (a big room's state and auth chain): the cyclic garbage collector waits.

Checking tens of thousands of events allocates hundreds of thousands of containers,
which triggers full collections (each a walk of the whole heap: a tenth of a second and
more per collection, several per join, finding next to nothing: the events are trees).
``gc_paused`` turns automatic collection off while such work runs; the collector runs
again as usual afterwards. Nestable and shared by concurrent tasks: it is on again when
the last of them is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_holders = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0 and _was_enabled:
            gc.enable()

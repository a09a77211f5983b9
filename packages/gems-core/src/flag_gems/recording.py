"""Which op calls ran on gems: a log line per call when ``record=True``, and counters for tests."""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger("flag_gems")

_counters: list[CallCounter] = []
_record_on = False
#: True while anything listens (record=True or a CallCounter); read on the fallback path.
active = False


def _refresh() -> None:
    global active
    active = _record_on or bool(_counters)


def set_record(on: bool) -> None:
    global _record_on
    _record_on = on
    if on and not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    _refresh()
_file_handlers: dict[str, logging.Handler] = {}


class CallCounter:
    """Counts of served calls (op name -> calls) and of calls a served op handed back to ATen."""

    def __init__(self) -> None:
        self.served: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.families: dict[str, str] = {}

    def __enter__(self) -> CallCounter:
        _counters.append(self)
        _refresh()
        return self

    def __exit__(self, *exc) -> None:
        _counters.remove(self)
        _refresh()

    def ran_on_gems(self, name: str) -> bool:
        """True when ``name`` (overload or base name) was served and did not hand every call back to ATen."""
        from flag_gems.aten_names import matches

        served = sum(n for op, n in self.served.items() if matches(op, [name]))
        fell_back = sum(n for op, n in self.fallbacks.items() if matches(op, [name]))
        return served > fell_back


def note_served(name: str, family: str) -> None:
    logger.info("gems served %s (%s)", name, family)
    for counter in _counters:
        counter.served[name] += 1
        counter.families[name] = family


def note_fallback(name: str) -> None:
    logger.info("gems handed %s back to ATen", name)
    for counter in _counters:
        counter.fallbacks[name] += 1


def attach_file(path: str) -> None:
    """Also write the record to ``path`` (appending)."""
    if path in _file_handlers:
        return
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    _file_handlers[path] = handler


def detach_files(keep: str | None = None) -> None:
    for path in list(_file_handlers):
        if path != keep:
            handler = _file_handlers.pop(path)
            logger.removeHandler(handler)
            handler.close()

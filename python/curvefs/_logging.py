"""Keeps the core's event filter at the level the ``curvefs`` loggers ask for.

The Rust core filters its events before they reach Python, so an event nobody wants costs
no GIL and no formatting. The filter must therefore know the level: it is the most verbose
effective level among the ``curvefs`` logger and its descendants (``logging.disable``
included), set at import and again whenever any logger's level changes. Python's logging
has no hook for that; every ``Logger.setLevel`` (and ``logging.disable``, ``dictConfig``…)
clears the manager's level cache, so that call is wrapped to re-sync. ``sync()`` is the
explicit call for anything that bypasses it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from curvefs import _core

LOGGER_NAME = "curvefs"


def effective_level() -> int:
    """The most verbose level any ``curvefs`` logger would emit at."""
    root = logging.getLogger(LOGGER_NAME)
    manager = root.manager
    levels = [root.getEffectiveLevel()]
    for name, logger in list(manager.loggerDict.items()):
        if name.startswith(LOGGER_NAME + ".") and isinstance(logger, logging.Logger):
            levels.append(logger.getEffectiveLevel())
    level = min(levels)
    if manager.disable >= level:
        level = manager.disable + 1
    return level


def sync() -> int:
    """Sets the core's filter from the loggers now; returns the level set."""
    level = effective_level()
    _core._set_log_level(level)
    return level


def _install() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    # A library's logger stays quiet unless the application configures logging (the
    # logging HOWTO's advice): without a handler anywhere, Python's last-resort handler
    # would print the core's warnings on stderr.
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    manager = logger.manager
    clear: Callable[[], None] | None = getattr(manager, "_clear_cache", None)
    if clear is not None and not getattr(clear, "_curvefs_sync", False):

        def clear_and_sync() -> None:
            clear()
            # A level change must never fail because of us (at interpreter exit, say).
            with contextlib.suppress(Exception):
                sync()

        clear_and_sync._curvefs_sync = True  # type: ignore[attr-defined]
        manager._clear_cache = clear_and_sync  # type: ignore[attr-defined]
    sync()


_install()

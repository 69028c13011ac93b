"""Device backends for other frameworks; each needs its extra and is imported on its own."""

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def root_log_level_kept() -> Iterator[None]:
    """Put the root logger's level back after the block: pymmcore-plus sets it to DEBUG when it is
    imported, which would make every library in the process log at debug level."""
    root = logging.getLogger()
    level = root.level
    try:
        yield
    finally:
        root.setLevel(level)

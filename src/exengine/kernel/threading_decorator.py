"""``on_thread``: pin an event class, a device class or a device method to a named executor
thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

THREAD_NAME_ATTR = "_thread_name"


def on_thread(thread_name: str) -> Callable[[T], T]:
    """Run the decorated event class, device class or device method on the executor thread
    ``thread_name``.

    A method-level choice beats a class-level one. The thread is created on demand.
    """
    if not isinstance(thread_name, str) or not thread_name:
        raise ValueError(f"on_thread needs a non-empty thread name, got {thread_name!r}")

    def decorator(target: T) -> T:
        if not (isinstance(target, type) or callable(target)):
            raise TypeError(f"on_thread decorates a class or a function, not {target!r}")
        setattr(target, THREAD_NAME_ATTR, thread_name)
        return target

    return decorator

"""Noticing device changes made elsewhere without the GUI thread waiting on a device.

A device call waits for the device's executor thread (busy while a plan runs), so the devices are
read on a thread of their own, one read at a time; a timer on the GUI thread compares the newest
reading with the last and reports a change.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import QObject, QTimer

#: How often the devices are read (ms).
WATCH_INTERVAL_MS = 1000


class DeviceWatch:
    """Calls ``changed()`` (GUI thread) when ``read(device)`` of any of ``devices()`` changes.

    ``devices()`` is asked on the GUI thread (it may read widgets); ``read`` runs on a thread.
    Nothing is read or reported while ``paused()``. The timer is a child of ``parent``: it stops
    when ``parent`` goes, or at :meth:`close`."""

    def __init__(
        self,
        devices: Callable[[], Sequence[Any]],
        read: Callable[[Any], Any],
        changed: Callable[[], None],
        paused: Callable[[], bool],
        parent: QObject,
        interval_ms: int = WATCH_INTERVAL_MS,
    ) -> None:
        self._devices, self._read, self._changed, self._paused = devices, read, changed, paused
        self._reading = False
        self._latest: tuple[Any, ...] | None = None  # the newest reading (set by the thread)
        self._seen: tuple[Any, ...] | None = None
        self._timer = QTimer(parent)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def close(self) -> None:
        """Stop watching."""
        with contextlib.suppress(RuntimeError):  # the timer went with its parent
            self._timer.stop()

    def _tick(self) -> None:
        if self._paused():
            return
        latest = self._latest
        if latest is not None and latest != self._seen:  # the first reading too: changes made
            self._seen = latest  # before it are not known otherwise
            self._changed()
        if self._reading:
            return
        devices = list(self._devices())
        self._reading = True
        threading.Thread(target=self._read_all, args=(devices,), daemon=True).start()

    def _read_all(self, devices: list[Any]) -> None:
        try:
            self._latest = tuple((id(d), self._read(d)) for d in devices)
        except Exception:  # a device that cannot answer now: read again at the next tick
            pass
        finally:
            self._reading = False

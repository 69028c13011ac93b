"""``PaintClock``: the CPU time that showing frames takes: the GUI thread's, and that of a software
OpenGL renderer's threads. Such a renderer paints napari's canvas where there is no GPU (Mesa's
llvmpipe: virtual machines, remote desktops, CI). On a 1280x720 screen it costs about as much CPU
as the GUI thread, and more on a larger one; on a GPU that work is the GPU's."""

from __future__ import annotations

import os
import time

#: Name prefixes of a software renderer's threads (Mesa's llvmpipe names them ``llvmpipe-N``).
RENDERER_THREADS = ("llvmpipe",)
_TASKS = "/proc/self/task"


class PaintClock:
    """CPU seconds of the calling (GUI) thread, and of the software renderer's threads in this
    process where Linux shows them (``/proc``; elsewhere none). The renderer's threads are looked up
    once, when the clock is made: make it after the viewer."""

    def __init__(self) -> None:
        #: Each renderer thread's run time file, and its last reading (ns).
        self._threads = {path: _run_time_ns(path) for path in _renderer_threads()}
        self._renderer_ns = 0

    @property
    def renderer_threads(self) -> int:
        """How many software renderer threads the clock follows (0: none, or a GPU)."""
        return len(self._threads)

    def read(self) -> tuple[float, float]:
        """The GUI thread's CPU seconds, and the renderer threads' since the clock was made."""
        for path, last in list(self._threads.items()):
            now = _run_time_ns(path)
            if now is None:  # the thread ended
                del self._threads[path]
                continue
            self._renderer_ns += now - (last or now)
            self._threads[path] = now
        return time.thread_time(), self._renderer_ns / 1e9


def _renderer_threads() -> list[str]:
    """The run time files (``schedstat``) of this process's software renderer threads."""
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            with open(f"{_TASKS}/{task}/comm") as file:
                name = file.read().strip()
        except OSError:
            continue
        if name.startswith(RENDERER_THREADS):
            found.append(f"{_TASKS}/{task}/schedstat")
    return found


def _run_time_ns(path: str) -> int | None:
    """A thread's time on a CPU (ns), from its ``schedstat``; ``None`` if it is gone."""
    try:
        with open(path) as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None

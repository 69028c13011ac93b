"""The images of a Micro-Manager core's circular buffer, each handed to the camera that took it.

A core has one circular buffer for all its cameras. When several capture at once (the cameras of a
Multi Camera device, or cameras started one after another) the next image in it may be another
camera's: :class:`CoreImages` pops images for the camera that asks and keeps the others' (told by
their ``Camera`` tag) until their cameras ask.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np

Image = tuple[np.ndarray, dict[str, Any]]

_BY_CORE: WeakKeyDictionary[Any, CoreImages] = WeakKeyDictionary()
_BY_CORE_LOCK = threading.Lock()


class CoreImages:
    """The images of one core's circular buffer, by camera label."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self._lock = threading.Lock()
        self._kept: dict[str, deque[Image]] = {}
        self._reading: set[str] = set()  # labels whose images are kept for them

    @classmethod
    def of(cls, core: Any) -> CoreImages:
        """The images of ``core`` (one object per core)."""
        with _BY_CORE_LOCK:
            images = _BY_CORE.get(core)
            if images is None:
                images = _BY_CORE[core] = cls(core)
            return images

    def begin(self, labels: Collection[str]) -> set[str]:
        """Cameras ``labels`` start a capture: what was kept for them is forgotten, and the circular
        buffer emptied unless another camera's images are in it or on their way; returns the other
        cameras still capturing (or whose images wait)."""
        with self._lock:
            others = {
                label
                for label in self._reading - set(labels)
                if self._kept.get(label) or self._running(label)
            }
            for label in labels:
                self._kept.pop(label, None)
            if not others:
                self._core.clearCircularBuffer()
            self._reading = others | set(labels)
            return others

    def _running(self, label: str) -> bool:
        try:
            return bool(self._core.isSequenceRunning(label))
        except (RuntimeError, ValueError):  # unloaded since it captured
            return False

    def keep(self, label: str, image: np.ndarray, metadata: dict[str, Any]) -> None:
        """Keep an image camera ``label`` took outside the circular buffer (a snap)."""
        with self._lock:
            self._kept.setdefault(label, deque()).append((image, metadata))

    def pop(self, labels: Collection[str]) -> Image | None:
        """The next image of any camera of ``labels`` (``None``: none yet). An image of a camera
        nobody reads goes to the caller."""
        with self._lock:
            for label in labels:
                kept = self._kept.get(label)
                if kept:
                    return kept.popleft()
            core = self._core
            while core.getRemainingImageCount():
                image, tags = core.popNextImageAndMD()
                metadata = {str(k): v for k, v in dict(tags).items()}
                owner = metadata.get("Camera")
                if owner in labels or owner not in self._reading:
                    return image, metadata
                self._kept.setdefault(owner, deque()).append((image, metadata))
            return None

    def waiting(self, labels: Collection[str]) -> bool:
        """Whether an image of a camera of ``labels`` waits (in the circular buffer, or kept)."""
        with self._lock:
            if any(self._kept.get(label) for label in labels):
                return True
            return bool(self._core.getRemainingImageCount())

"""``FrameStage``: where a frame is in the data pipeline (one name for the handler and futures)."""

from __future__ import annotations

from enum import StrEnum


class FrameStage(StrEnum):
    """A frame's stage: ``ACQUIRED`` (put into the ``DataHandler``), ``PROCESSED`` (out of the
    processor), ``STORED`` (in the storage); ``FAILED`` when processing or storing it failed, and
    ``FINISHED`` (with no frame) once the handler has stored everything. Members are the strings
    they name, so a listener may compare them with ``"stored"``."""

    ACQUIRED = "acquired"
    PROCESSED = "processed"
    STORED = "stored"
    FAILED = "failed"
    FINISHED = "finished"

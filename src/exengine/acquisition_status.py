"""``AcquisitionStatus``: a frozen snapshot of an acquisition, which the panel and the command line
only render (:meth:`AcquisitionStatus.summary`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AcquisitionStatus", "FinishReason", "RunState", "format_bytes", "format_duration"]


class RunState(StrEnum):
    """Where an acquisition is: ``READY`` (not started), ``RUNNING``, ``PAUSED``, ``STORING`` (its
    events have ended, frames are still being stored) or ``FINISHED``."""

    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    STORING = "storing"
    FINISHED = "finished"


class FinishReason(StrEnum):
    """Why an acquisition ended: its plan was ``DONE``, it was ``STOPPED`` (every frame acquired is
    stored), ``ABORTED`` (frames not yet read out abandoned), or it ``FAILED``."""

    DONE = "done"
    STOPPED = "stopped"
    ABORTED = "aborted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AcquisitionStatus:
    """One moment of an acquisition. ``frames_planned`` is ``None`` for an open-ended plan;
    ``elapsed_s`` is the time spent acquiring (pauses excluded), ``frames_per_s`` the frames
    acquired per second of it; ``frames_per_s`` and ``time_left_s`` are ``None`` until there is a
    rate to tell them from (``time_left_s`` also for open-ended plans); ``finish_reason`` is set
    once the events have ended, ``error`` (a one-line message) when it failed."""

    state: RunState
    frames_planned: int | None
    frames_acquired: int
    frames_stored: int
    frames_dropped: int
    frames_per_s: float | None
    elapsed_s: float
    time_left_s: float | None
    finish_reason: FinishReason | None = None
    error: str | None = None

    @property
    def is_finished(self) -> bool:
        """True once every frame is stored (or the acquisition failed) and nothing runs."""
        return self.state is RunState.FINISHED

    def frames_text(self) -> str:
        """The frames, of those planned: acquired while the events run (``40 of 120 frames``),
        stored once they have ended (``65 of 120 frames stored``, or both counts when a processor
        or the storage made them differ)."""
        planned = "" if self.frames_planned is None else f" of {self.frames_planned:,}"
        if self.finish_reason is None:
            text = f"{self.frames_acquired:,}{planned} {_frames(self.frames_acquired, planned)}"
        elif self.frames_stored == self.frames_acquired:
            text = f"{self.frames_stored:,}{planned} {_frames(self.frames_stored, planned)} stored"
        else:
            text = (
                f"{self.frames_acquired:,}{planned} {_frames(self.frames_acquired, planned)} "
                f"acquired, {self.frames_stored:,} stored"
            )
        if self.frames_dropped:
            text += f", {self.frames_dropped:,} dropped by the camera"
        return text

    def summary(self) -> str:
        """One line for a status bar or a log: the state (or finish reason), frames stored of
        planned, and while running the rate and the time left (the time elapsed when open-ended)."""
        if self.state is RunState.FINISHED or self.finish_reason is not None:
            reason = self.finish_reason or FinishReason.DONE
            text = f"{reason}: {self.frames_text()}"
            if self.error:
                text += f". {self.error}"
            return text
        text = f"{self.state}: {self.frames_text()}"
        if self.state is RunState.READY:
            return text
        if self.frames_per_s is not None:
            text += f", {self.frames_per_s:,.1f} frames/s"
        if self.frames_planned is None:
            text += f", {format_duration(self.elapsed_s)} elapsed"
        elif self.time_left_s is not None:
            text += f", {format_duration(self.time_left_s)} left"
        return text


def _frames(count: int, planned: str) -> str:
    return "frame" if count == 1 and not planned else "frames"


def format_duration(seconds: float | None) -> str:
    """A duration as people read it: ``4.2 s``, ``3m05s``, ``2h07m``, ``3d04h`` (``?`` unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        days, hours = divmod(hours, 24)
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_bytes(size: float) -> str:
    """A size as people read it: ``512 B``, ``3.5 MB``, ``2,441.4 GB`` (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"

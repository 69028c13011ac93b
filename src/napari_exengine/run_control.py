"""The run control of the Acquisition panel: the estimate, Run / Pause / Stop / Abort, the progress
bar and the status line, which renders ``Acquisition.status()``."""

from __future__ import annotations

from magicgui import widgets as mw

from exengine.acquisition_status import (
    AcquisitionStatus,
    RunState,
    format_bytes,
    format_duration,
)

from .acquisition_setup import CheckedAcquisition

__all__ = ["RunControl"]


class RunControl(mw.Container):
    """What a run shows and how it is controlled; the panel connects the buttons."""

    def __init__(self) -> None:
        self.estimate = mw.Label(value="", label="estimate")
        self.run_button = mw.PushButton(text="Run")
        self.pause_button = mw.PushButton(text="Pause", enabled=False)
        self.stop_button = mw.PushButton(text="Stop", enabled=False)
        self.abort_button = mw.PushButton(text="Abort", enabled=False)
        #: Continue an interrupted dataset (docs/resume.rst); "Resume" alone goes on after Pause.
        self.resume_dataset_button = mw.PushButton(text="Resume a dataset…")
        self.progress = mw.ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = mw.Label(value="")
        buttons = mw.Container(
            widgets=[self.run_button, self.pause_button, self.stop_button, self.abort_button],
            layout="horizontal",
        )
        super().__init__(
            widgets=[self.estimate, buttons, self.resume_dataset_button, self.progress, self.status]
        )
        self.margins = (0, 0, 0, 0)

    def show_estimate(self, checked: CheckedAcquisition) -> None:
        """The checked plan's frames, bytes and duration, with the processors' notes."""
        frames = checked.total_frames
        if frames is None and getattr(checked.request.plan, "until_stopped", False):
            text = "until stopped"
        elif frames is None:
            text = "frames not known in advance (the plan decides as it runs)"
        else:
            size = format_bytes(frames * checked.frame_bytes)
            duration = format_duration(checked.duration_s)
            text = f"{frames:,} frame{'' if frames == 1 else 's'}, {size}, ~{duration}"
        notes = [*checked.notes, *([checked.space_warning] if checked.space_warning else [])]
        self.estimate.value = "; ".join([text, *notes])

    def show_invalid(self, reason: str) -> None:
        """The settings cannot work: say why; Run stays off."""
        self.estimate.value = f"invalid: {reason}"
        self.run_button.enabled = False

    def set_running(self, running: bool) -> None:
        """Buttons for a run (Pause, Stop, Abort) or for none (Run)."""
        self.run_button.enabled = not running
        self.resume_dataset_button.enabled = not running
        self.pause_button.enabled = running
        self.pause_button.text = "Pause"
        self.stop_button.enabled = running
        self.abort_button.enabled = running

    def show_status(self, status: AcquisitionStatus) -> None:
        """Show an acquisition's status: the progress (a busy bar for open-ended plans) and one
        line."""
        planned = status.frames_planned
        done = status.frames_stored if status.finish_reason else status.frames_acquired
        self.progress.max = max(planned or 0, done if status.is_finished else 0)
        self.progress.value = min(done, self.progress.max) if self.progress.max else 0
        self.pause_button.text = "Resume" if status.state is RunState.PAUSED else "Pause"
        self.status.value = status.summary()

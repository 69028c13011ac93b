"""The processors form of the Acquisition panel: a chain of contributed processors, each with its
settings form, and where they run (this machine, a local Dask cluster, a Dask scheduler)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui import widgets as mw

from .acquisition_setup import ProcessorChoice
from .contributions import Contribution
from .panel_common import form_values, settings_form

__all__ = ["ProcessorsForm"]

_THIS_MACHINE, _LOCAL_CLUSTER, _SCHEDULER = "this machine", "a local cluster", "a Dask scheduler"


class ProcessorsForm(mw.Container):
    """The processors contributed by installed plugins (``processors``, by id), chained in the
    order added; ``changed_settings`` is called whenever the chain or a setting changes."""

    def __init__(
        self, processors: dict[str, Contribution], changed_settings: Callable[..., Any]
    ) -> None:
        self.processors = processors
        self._changed = changed_settings
        self.choice = mw.ComboBox(
            choices=[(f"{c.title} ({c.plugin})", c.id) for c in processors.values()],
            label="processor",
        )
        self.add_button = mw.PushButton(text="Add processor")
        self.chain = mw.Container(labels=False, visible=False)
        self.forms: list[tuple[Contribution, mw.Container, mw.Container]] = []
        self.processing = mw.ComboBox(
            choices=[_THIS_MACHINE, _LOCAL_CLUSTER, _SCHEDULER],
            value=_THIS_MACHINE,
            label="processors run on",
        )
        self.cluster_workers = mw.SpinBox(value=2, min=1, max=256, label="workers", visible=False)
        self.scheduler_address = mw.LineEdit(
            value="tcp://127.0.0.1:8786", label="scheduler", visible=False
        )
        super().__init__(
            widgets=[
                self.choice,
                self.add_button,
                self.chain,
                self.processing,
                self.cluster_workers,
                self.scheduler_address,
            ]
        )
        self.margins = (0, 0, 0, 0)
        self.add_button.clicked.connect(lambda: self.add(self.choice.value))
        self.processing.changed.connect(self._show_processing)
        for widget in (self.processing, self.cluster_workers, self.scheduler_address):
            widget.changed.connect(self._changed)

    def add(self, contribution_id: str) -> mw.Container:
        """Append a contributed processor (with its settings form) to the chain; returns the
        settings form."""
        contribution = self.processors[contribution_id]
        form = settings_form(contribution)
        remove = mw.PushButton(text="Remove")
        title = mw.Label(value=f"{len(self.forms) + 1}. {contribution.title}")
        box = mw.Container(widgets=[title, form, remove], labels=False)
        entry = (contribution, form, box)
        self.forms.append(entry)
        self.chain.append(box)
        self.chain.visible = True
        remove.clicked.connect(lambda: self._remove(entry))
        for widget in form:
            widget.changed.connect(self._changed)
        self._changed()
        return form

    def _remove(self, entry: tuple[Contribution, mw.Container, mw.Container]) -> None:
        self.forms.remove(entry)
        self.chain.remove(entry[2])
        self.chain.visible = bool(self.forms)
        self._changed()

    def choices(self) -> tuple[ProcessorChoice, ...]:
        """The chain, in order, as the acquisition setup takes it."""
        return tuple(ProcessorChoice(c.id, form_values(form)) for c, form, _ in self.forms)

    def location(self) -> str:
        """Where processors run, as ``exengine.dask_processing.parse_location`` reads it."""
        if self.processing.value == _LOCAL_CLUSTER:
            return f"cluster:{self.cluster_workers.value}"
        if self.processing.value == _SCHEDULER:
            return self.scheduler_address.value.strip()
        return "local"

    def _show_processing(self, *_: Any) -> None:
        self.cluster_workers.visible = self.processing.value == _LOCAL_CLUSTER
        self.scheduler_address.visible = self.processing.value == _SCHEDULER

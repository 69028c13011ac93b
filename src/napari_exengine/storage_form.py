"""The storage form of the Acquisition panel: the storage backend (an npe2 contribution) with its
settings, the folder or store URL the dataset goes to, and the dataset's name."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from magicgui import widgets as mw

from .contributions import DEFAULT_STORAGE, Contribution
from .panel_common import form_values, settings_form

__all__ = ["StorageForm", "default_data_directory"]


def default_data_directory() -> str:
    """Where the acquisition panel saves datasets unless told otherwise: ``$EXENGINE_DATA_DIR``,
    else ``~/exengine-data`` (not the temporary folder, which the system may empty)."""
    return os.environ.get("EXENGINE_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "exengine-data"
    )


class StorageForm(mw.Container):
    """The storage backends contributed by installed plugins (``storages``, by id);
    ``changed_settings`` is called whenever a setting changes."""

    def __init__(
        self, storages: dict[str, Contribution], changed_settings: Callable[..., Any]
    ) -> None:
        self.storages = storages
        self._changed = changed_settings
        self.backend = mw.ComboBox(
            choices=[(c.title, c.id) for c in storages.values()],
            value=DEFAULT_STORAGE if DEFAULT_STORAGE in storages else None,
            label="storage",
        )
        self.backend_settings = mw.Container(labels=True)
        self.directory = mw.FileEdit(mode="d", value=default_data_directory(), label="directory")
        self.dataset_name = mw.LineEdit(value="acquisition", label="name")
        super().__init__(
            widgets=[self.backend, self.backend_settings, self.directory, self.dataset_name]
        )
        self.margins = (0, 0, 0, 0)
        self.backend.changed.connect(self._show_backend_settings)
        for widget in (self.backend, self.directory, self.dataset_name):
            widget.changed.connect(self._changed)
        self._show_backend_settings()

    @property
    def storage_id(self) -> str:
        """The chosen storage backend's contribution id."""
        return str(self.backend.value or DEFAULT_STORAGE)

    def settings(self) -> dict[str, Any]:
        """The backend's settings (empty text fields: its defaults)."""
        return form_values(self.backend_settings)

    def destination(self) -> str:
        """Where datasets go: the folder, or a store URL typed into it (``s3://bucket/prefix``)."""
        typed = str(self.directory.line_edit.value).strip()
        return typed if "://" in typed else str(self.directory.value)

    def dataset(self) -> str:
        """The dataset's name (``acquisition`` when left empty)."""
        return self.dataset_name.value.strip() or "acquisition"

    def _show_backend_settings(self, *_: Any) -> None:
        self.backend_settings.clear()
        contribution = self.storages.get(self.backend.value)
        if contribution is not None:
            for widget in settings_form(contribution):
                widget.changed.connect(self._changed)
                self.backend_settings.append(widget)
        self.backend_settings.visible = len(self.backend_settings) > 0

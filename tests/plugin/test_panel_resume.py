"""Resume a dataset in the Acquisition panel: a run stopped part way is continued in the same
dataset, and a dataset that cannot resume is refused in red."""

from __future__ import annotations

import pytest

from exengine.storage.ndtiff_reader import NDTiffReader
from napari_exengine.panel_common import ERROR_COLOUR

pytestmark = pytest.mark.gui


def finish(panel, qtbot, timeout=30000):
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=timeout)


@pytest.mark.parametrize("storage", ["ndtiff", "omezarr"])
def test_a_stopped_run_is_resumed_in_the_panel(gui_viewer, scope, qtbot, tmp_path, storage):
    from napari_exengine.acquisition_panel import AcquisitionPanel

    scope["Camera"].frame_rate_limit = 50.0
    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 40
    panel.storage.directory.value = tmp_path
    panel.storage.backend.value = f"napari-exengine.storage.{storage}"
    first = panel.run()
    qtbot.waitUntil(lambda: first.frames_stored >= 5, timeout=20000)
    panel.stop()
    finish(panel, qtbot)
    path = first.data_handler.storage.path
    stored = first.frames_stored
    assert 5 <= stored < 40
    assert not panel.run_control.resume_dataset_button.native.isHidden()

    resumed = panel.resume_dataset(path)
    assert resumed is not None and resumed.total_frames == 40 - stored
    assert not panel.run_control.resume_dataset_button.enabled  # while it runs
    finish(panel, qtbot)
    assert resumed.frames_stored == 40 - stored
    assert panel.run_control.status.value.startswith(f"done: {40 - stored} of {40 - stored}")
    if storage == "ndtiff":
        assert sorted(c["time"] for c in NDTiffReader(path).coordinates()) == list(range(40))
    else:
        from exengine.storage.omezarr_reader import OMEZarrDataset

        assert sorted(c["time"] for c in OMEZarrDataset(path).coordinates()) == list(range(40))

    panel.resume_dataset(path)  # complete now: refused, in red
    assert "already complete: all 40 frames" in panel.run_control.status.value
    assert ERROR_COLOUR in panel.run_control.status.native.styleSheet()
    assert panel.run_control.run_button.enabled

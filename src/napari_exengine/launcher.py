"""The ``napari-exengine`` command: napari with simulated devices and both panels docked."""

from __future__ import annotations

import argparse
from typing import Any


def open_viewer(show: bool = True, cameras: int = 1) -> Any:
    """Open a napari viewer with the devices and acquisition panels docked (the simulated
    microscope with ``cameras`` cameras, when no devices are registered); returns the viewer."""
    import napari

    from .acquisition_panel import AcquisitionPanel
    from .devices_panel import DevicesPanel
    from .panel_common import ensure_devices

    ensure_devices(cameras)
    viewer = napari.Viewer(title="napari-exengine", show=show)
    viewer.window.add_dock_widget(DevicesPanel(viewer), name="Devices", area="right")
    viewer.window.add_dock_widget(AcquisitionPanel(viewer), name="Acquisition", area="right")
    return viewer


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``napari-exengine`` console script."""
    from exengine import __version__

    parser = argparse.ArgumentParser(prog="napari-exengine", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--cameras",
        type=int,
        default=1,
        choices=range(1, 9),
        metavar="N",
        help="cameras on the simulated microscope, 1 to 8 (default 1; several capture together)",
    )
    args = parser.parse_args(argv)
    import napari

    open_viewer(cameras=args.cameras)
    napari.run()

"""The dock panels (re-exports): :mod:`.devices_panel` and :mod:`.acquisition_panel`."""

from .acquisition_panel import AcquisitionPanel
from .devices_panel import DevicesPanel
from .panel_common import ensure_devices

__all__ = ["AcquisitionPanel", "DevicesPanel", "ensure_devices"]

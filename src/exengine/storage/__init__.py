"""Storage backends. Each needs its extra (``ndstorage``, ``zarr``; OME-TIFF needs ``tifffile``)
and is imported on first use."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["NDRAMStorage", "NDTiffStorage", "OMETiffStorage", "OMEZarrStorage"]

_HOMES = {
    "NDTiffStorage": ".ndtiff",
    "NDRAMStorage": ".ndtiff",
    "OMEZarrStorage": ".omezarr",
    "OMETiffStorage": ".ometiff",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'exengine.storage' has no attribute {name!r}")
    return getattr(import_module(home, __name__), name)

"""Storage backends. NDTiff/NDRAM need the ``ndstorage`` extra; they are imported on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["NDRAMStorage", "NDTiffStorage"]


def __getattr__(name: str) -> Any:
    if name in ("NDTiffStorage", "NDRAMStorage"):
        from . import ndtiff

        return getattr(ndtiff, name)
    raise AttributeError(f"module 'exengine.storage' has no attribute {name!r}")

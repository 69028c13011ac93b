"""NDTiff and NDRAM storage (re-export of :mod:`exengine.storage.ndtiff`)."""

from ...storage.ndtiff import NDRAMStorage, NDTiffStorage

__all__ = ["NDRAMStorage", "NDTiffStorage"]

"""NDTiff and NDRAM storage under ExEngine's module path (re-export of
:mod:`exengine.storage.ndtiff`)."""

from ...storage.ndtiff import NDRAMStorage, NDTiffStorage

__all__ = ["NDRAMStorage", "NDTiffStorage"]

"""napari-exengine: acquire with ExEngine inside napari."""

from typing import Any

__all__ = ["LayerSink", "__version__", "attach_layer_sink"]


def __getattr__(name: str) -> Any:
    """Import on first use: the layer sink needs Qt (the headless ``exengine`` command runs without
    napari), and the engine takes a tenth of a second to import (the ``exengine`` script handles
    Ctrl-C from its first moment)."""
    if name == "__version__":
        from exengine import __version__

        return __version__
    if name in ("LayerSink", "attach_layer_sink"):
        from . import layer_sink

        return getattr(layer_sink, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

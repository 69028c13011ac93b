"""napari-exengine: acquire with ExEngine inside napari."""

from typing import Any

from exengine import __version__

__all__ = ["LayerSink", "__version__", "attach_layer_sink"]


def __getattr__(name: str) -> Any:
    """Import the layer sink (it needs Qt) on first use, so the headless ``exengine`` command runs
    without napari."""
    if name in ("LayerSink", "attach_layer_sink"):
        from . import layer_sink

        return getattr(layer_sink, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

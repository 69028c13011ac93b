"""napari-exengine: acquire with ExEngine inside napari."""

from exengine import __version__

from .layer_sink import LayerSink, attach_layer_sink

__all__ = ["LayerSink", "__version__", "attach_layer_sink"]

"""ExEngine: an execution engine for microscope and laboratory hardware."""

from importlib.metadata import PackageNotFoundError, version

from .kernel.executor import ExecutionEngine
from .kernel.threading_decorator import on_thread

try:
    __version__ = version("napari-exengine")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

__all__ = ["ExecutionEngine", "__version__", "on_thread"]

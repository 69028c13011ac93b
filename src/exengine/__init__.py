"""ExEngine: an execution engine for microscope and laboratory hardware."""

from .kernel.executor import ExecutionEngine
from .kernel.threading_decorator import on_thread

#: The version of the ``napari-exengine`` distribution; ``setup.cfg`` reads it from here (its one
#: source).
__version__ = "0.1.0"

__all__ = ["ExecutionEngine", "__version__", "on_thread"]

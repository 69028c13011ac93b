"""The data layer: coordinates, iterators, the data handler and processors (re-exports)."""

from .kernel.data_coords import DataCoordinates, DataCoordinatesIterator
from .kernel.data_handler import DataHandler, DataHandlerError
from .kernel.data_processor import DataProcessor
from .kernel.data_storage_base import DataStorage, PlannedData
from .kernel.frame_stage import FrameStage

__all__ = [
    "DataCoordinates",
    "DataCoordinatesIterator",
    "DataHandler",
    "DataHandlerError",
    "DataProcessor",
    "DataStorage",
    "FrameStage",
    "PlannedData",
]

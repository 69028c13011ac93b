"""Built-in processors and processor chains.

Each factory returns a :class:`~exengine.data.DataProcessor`. Arithmetic is done in floating point
and the result is clipped to the range of the input dtype and rounded, so nothing wraps around.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from .kernel.data_coords import DataCoordinates
from .kernel.data_handler import DataProcessor, Frame

__all__ = [
    "ProcessorChain",
    "background_subtraction",
    "flat_field_correction",
    "frame_averaging",
    "max_intensity_projection",
]


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _load_image(reference: Union[str, os.PathLike[str], np.ndarray], what: str) -> np.ndarray:
    if isinstance(reference, np.ndarray):
        return reference
    path = os.fspath(reference)
    if path.endswith(".npy"):
        return np.load(path)
    try:
        import tifffile
    except ImportError as error:
        raise ImportError(f"Reading the {what} {path!r} needs tifffile or a .npy file") from error
    return tifffile.imread(path)


class ProcessorChain(DataProcessor):
    """Runs processors one after another; each output frame of one feeds the next."""

    def __init__(self, processors: Sequence[DataProcessor]) -> None:
        self.processors = [p if isinstance(p, DataProcessor) else DataProcessor(p) for p in processors]
        super().__init__(self._run)

    def _run(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> list[Frame]:
        frames: list[Frame] = [(coords, data, metadata)]
        for processor in self.processors:
            frames = [out for frame in frames for out in processor.process(*frame)]
        return frames

    def __repr__(self) -> str:
        return f"ProcessorChain({self.processors!r})"


def background_subtraction(level: float = 100.0, dark_image: Optional[str] = None) -> DataProcessor:
    """Subtract a dark frame (``dark_image``: a .tif/.npy path) or a constant ``level``; clips at zero."""
    dark = _load_image(dark_image, "dark image").astype(np.float64) if dark_image else None

    def subtract(coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Frame:
        if dark is not None and dark.shape != data.shape:
            raise ValueError(f"The dark image is {dark.shape}; frames at {dict(coords)} are {data.shape}")
        result = data.astype(np.float64) - (dark if dark is not None else float(level))
        return coords, _to_dtype(np.maximum(result, 0), data.dtype), dict(metadata or {}, Background=(
            dark_image or float(level)))

    return DataProcessor(subtract)


def flat_field_correction(flat_image: str, dark_image: Optional[str] = None) -> DataProcessor:
    """Divide by a flat field normalised to mean 1 (after subtracting an optional dark frame)."""
    flat = _load_image(flat_image, "flat-field image").astype(np.float64)
    dark = _load_image(dark_image, "dark image").astype(np.float64) if dark_image else np.zeros_like(flat)
    gain = flat - dark
    if np.any(gain <= 0):
        raise ValueError("The flat-field image must be brighter than the dark image everywhere")
    gain /= gain.mean()

    def correct(coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Frame:
        if data.shape != gain.shape:
            raise ValueError(f"The flat-field image is {gain.shape}; frames at {dict(coords)} are {data.shape}")
        result = np.maximum(data.astype(np.float64) - dark, 0) / gain
        return coords, _to_dtype(result, data.dtype), dict(metadata or {}, FlatField=str(flat_image))

    return DataProcessor(correct)


def frame_averaging(frames: int = 4, axis: str = "time") -> DataProcessor:
    """Average every ``frames`` consecutive frames along ``axis`` into one (``axis`` index ÷ ``frames``)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    pending: dict[frozenset, list[np.ndarray]] = {}

    def average(coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Optional[Frame]:
        if axis not in coords:
            raise KeyError(f"Frame averaging over {axis!r}, but frames at {dict(coords)} have no such axis")
        index = int(coords[axis])
        group = DataCoordinates(coords)
        group[axis] = index // frames
        key = frozenset(group.items())
        stack = pending.setdefault(key, [])
        stack.append(data)
        if len(stack) < frames:
            return None
        del pending[key]
        mean = np.mean(np.stack(stack).astype(np.float64), axis=0)
        return group, _to_dtype(mean, data.dtype), dict(metadata or {}, AveragedFrames=frames)

    return DataProcessor(average)


def max_intensity_projection(z_planes: int = 10, keep_planes: bool = False, axis: str = "z") -> DataProcessor:
    """Project ``z_planes`` planes along ``axis`` into one frame without that axis (and a ``projection``
    coordinate ``"max"``); ``keep_planes`` also passes every plane through."""
    if z_planes < 1:
        raise ValueError(f"z_planes must be >= 1, got {z_planes}")
    stacks: dict[frozenset, tuple[np.ndarray, int]] = {}

    def project(coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Optional[list[Frame]]:
        if axis not in coords:
            raise KeyError(f"Projection over {axis!r}, but frames at {dict(coords)} have no such axis")
        rest = DataCoordinates({k: v for k, v in coords.items() if k != axis})
        key = frozenset(rest.items())
        current, count = stacks.get(key, (None, 0))
        current = data.copy() if current is None else np.maximum(current, data)
        outputs: list[Frame] = [(coords, data, metadata)] if keep_planes else []
        if count + 1 == z_planes:
            stacks.pop(key, None)
            projected = DataCoordinates({**rest, "projection": "max"})
            outputs.append((projected, current, dict(metadata or {}, Projection=f"max over {z_planes} {axis}")))
        else:
            stacks[key] = (current, count + 1)
        return outputs or None

    return DataProcessor(project)

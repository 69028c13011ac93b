"""Array-likes that napari slices lazily: frames are read one at a time when shown."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FrameReader = Callable[[dict[str, Any]], np.ndarray | None]


class LazyFrames:
    """An array (axes..., *frame_shape) whose frames come from ``read(coords)`` on demand.

    ``values[axis][i]`` is the coordinate value at slider index ``i``; ``fixed`` adds constant
    coordinates (e.g. the channel of a per-channel layer). Missing frames read as zeros.
    """

    def __init__(
        self,
        read: FrameReader,
        axes: Sequence[str],
        values: dict[str, Sequence[Any]],
        frame_shape: tuple[int, ...],
        dtype: Any,
        fixed: dict[str, Any] | None = None,
    ) -> None:
        self._read = read
        self.axes = list(axes)
        self._values = {
            a: values[a] if isinstance(values[a], range) else list(values[a]) for a in self.axes
        }
        self._fixed = dict(fixed or {})
        self._frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(max(len(self._values[a]), 1) for a in self.axes) + self._frame_shape
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[tuple(slice(None) for _ in self.shape)], dtype=dtype)

    def coords_at(self, position: Sequence[int]) -> dict[str, Any]:
        """The coordinates of the frame at slider ``position``."""
        coords = dict(self._fixed)
        for axis, index in zip(self.axes, position, strict=False):
            values = self._values[axis]
            if values:
                coords[axis] = values[index]
        return coords

    def frame(self, position: Sequence[int]) -> np.ndarray:
        """The frame at slider ``position`` (zeros where there is none)."""
        data = self._read(self.coords_at(position))
        return np.zeros(self._frame_shape, self.dtype) if data is None else np.asarray(data)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        lead, rest = key[: len(self.axes)], key[len(self.axes) :]
        ranges = [
            range(self.shape[i])[k] if isinstance(k, slice) else [int(k) % self.shape[i]]
            for i, k in enumerate(lead)
        ]
        frames = [self.frame(p)[rest] for p in itertools.product(*ranges)]
        out_shape = [len(r) for k, r in zip(lead, ranges, strict=True) if isinstance(k, slice)]
        if not frames:
            return np.zeros([*out_shape, 0], self.dtype)
        stacked = np.stack(frames) if len(frames) > 1 else frames[0][None]
        return stacked.reshape(out_shape + list(stacked.shape[1:]))

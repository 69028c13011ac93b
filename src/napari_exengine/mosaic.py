"""Tiles where they were taken: frames of a grid scan, a multi-position run or any plan whose
frames have a tile axis (``position``, ``row``/``column``, ``grid``, ``tile``) and a stage position
in their metadata are pasted into a canvas at that position, one image layer per camera and channel
(the :class:`~napari_exengine.layer_sink.LayerSink` hands them over on the GUI thread).

A frame is centred on its stage position (``StageX-um``/``StageY-um``, or Micro-Manager's
``XPositionUm``/``YPositionUm``); the layer's scale is the canvas's pixel size and its translate
the canvas's top-left corner, both in µm. The canvas grows with the tiles; beyond
``MAX_CANVAS_SIDE`` pixels a side it is a reduced preview (every 2nd, 4th... pixel; storage keeps
every frame whole). Each value of the other axes (time, z, ...) has its own canvas, as a slider of
the layer; the newest ``CANVASES_KEPT`` are kept, others are pasted again from the data handler
when shown. Pasting a tile costs the GUI thread about a copy of the frame.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exengine.data import DataCoordinates, DataHandler, PlannedData

from .layer_axes import (
    TILE_AXES,
    AxisIndex,
    aligned_axes,
    contrast_limits,
    frame_corner_um,
    layer_name,
    pixel_size_um,
    sort_axes,
    stage_xy_um,
)
from .lazy_array import LazyFrames

#: The most pixels a side of a mosaic's canvas has (a uint16 canvas takes at most 32 MB).
MAX_CANVAS_SIDE = 4096
#: Canvases (values of the other axes) kept per layer; others are pasted again when shown.
CANVASES_KEPT = 4

#: The slider axes of the newest tile's layer and its indices along them.
Newest = tuple[list[str], list[int]]


@dataclass(frozen=True)
class _Tile:
    """One frame of a mosaic: its coordinates and its top-left corner, size and pixel size (µm)."""

    coords: DataCoordinates
    y: float
    x: float
    height: float
    width: float
    pixel: float


class _Canvas:
    """Where the canvas lies: its top-left corner and pixel size (µm) and its shape."""

    def __init__(self, tile: _Tile) -> None:
        self.y0, self.x0 = tile.y, tile.x
        self.y1, self.x1 = tile.y + tile.height, tile.x + tile.width
        self.base = tile.pixel  # the first tile's pixel size: steps are it times a power of 2
        self.step = tile.pixel
        self._fit()

    def _fit(self) -> None:
        factor = 1
        while max(self.y1 - self.y0, self.x1 - self.x0) / (self.base * factor) > MAX_CANVAS_SIDE:
            factor *= 2
        self.step = self.base * factor
        self.shape = (
            max(1, math.ceil((self.y1 - self.y0) / self.step - 1e-6)),
            max(1, math.ceil((self.x1 - self.x0) / self.step - 1e-6)),
        )

    def grow(self, tile: _Tile) -> bool:
        """Take in ``tile``'s area; True when the canvas moved or grew."""
        bounds = (self.y0, self.x0, self.y1, self.x1)
        self.y0, self.x0 = min(self.y0, tile.y), min(self.x0, tile.x)
        self.y1, self.x1 = max(self.y1, tile.y + tile.height), max(self.x1, tile.x + tile.width)
        if bounds == (self.y0, self.x0, self.y1, self.x1):
            return False
        self._fit()
        return True

    def paste(
        self, canvas: np.ndarray, frame: np.ndarray, y: float, x: float, pixel: float
    ) -> None:
        """Paste ``frame`` (of ``pixel`` µm, top-left corner at ``y``, ``x`` µm) into ``canvas``."""
        top, left = round((y - self.y0) / self.step), round((x - self.x0) / self.step)
        ratio = self.step / pixel
        if math.isclose(ratio, 1.0):
            part = frame
        elif math.isclose(ratio, round(ratio)):
            part = frame[:: round(ratio), :: round(ratio)]
        else:  # nearest pixels
            rows = (np.arange(round(frame.shape[0] / ratio)) * ratio).astype(int)
            cols = (np.arange(round(frame.shape[1] / ratio)) * ratio).astype(int)
            part = frame[
                np.ix_(rows.clip(max=frame.shape[0] - 1), cols.clip(max=frame.shape[1] - 1))
            ]
        height = min(part.shape[0], canvas.shape[0] - top)
        width = min(part.shape[1], canvas.shape[1] - left)
        if height > 0 and width > 0 and top >= 0 and left >= 0:
            canvas[top : top + height, left : left + width] = part[:height, :width]

    def moved(self, old: _Canvas, canvas: np.ndarray, dtype: Any) -> np.ndarray:
        """``canvas`` of ``old`` geometry, as a canvas of this one."""
        new = np.zeros(self.shape, dtype)
        self.paste(new, canvas, old.y0, old.x0, old.step)
        return new


class _MosaicLayer:
    """One layer of tiles (a camera and channel): its slider axes, tiles and canvases."""

    def __init__(self, mosaic: Mosaic, key: Any, fixed: dict[str, Any], dtype: Any) -> None:
        self.mosaic, self.key, self.fixed, self.dtype = mosaic, key, fixed, np.dtype(dtype)
        self.axes: list[str] = []
        self.indices: dict[str, AxisIndex] = {}
        self.tiles: dict[tuple, dict[tuple, _Tile]] = {}  # by the other axes' values, by tile
        self.canvases: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.geometry: _Canvas | None = None
        self.contrast: tuple[float, float] | None = None
        self.layer: Any = None

    def _key(self, coords: Mapping[str, Any]) -> tuple:
        """The canvas of a frame: its values along the other axes."""
        return tuple(sorted((a, coords[a]) for a in self.indices if a in coords))

    def add(self, coords: DataCoordinates, frame: np.ndarray, metadata: Any) -> tuple[bool, list]:
        """Place a tile; returns whether the layer must be rebuilt and the tile's slider indices."""
        stage = stage_xy_um(metadata)
        assert stage is not None
        pixel = pixel_size_um(metadata, self.geometry.base if self.geometry else 1.0)
        y, x = frame_corner_um(stage, frame.shape, pixel)
        tile = _Tile(coords, y, x, frame.shape[-2] * pixel, frame.shape[-1] * pixel, pixel)
        rebuild = self.layer is None
        for axis in coords:
            if axis not in TILE_AXES and axis not in self.fixed and axis not in self.indices:
                self.indices[axis] = self.mosaic.planned_index(axis)
                self.axes = sort_axes([*self.axes, axis])
                self.canvases.clear()
                rebuild = True
        sizes = [len(self.indices[a]) for a in self.axes]
        position = [self.indices[a].add(coords[a]) if a in coords else 0 for a in self.axes]
        rebuild |= sizes != [len(self.indices[a]) for a in self.axes]
        rebuild |= self._grow(tile)
        bucket = self.tiles.setdefault(self._key(coords), {})
        spot = tuple(sorted((a, coords[a]) for a in TILE_AXES if a in coords))
        bucket.pop(spot, None)
        bucket[spot] = tile
        canvas = self.canvases.get(self._key(coords))
        if canvas is not None:
            assert self.geometry is not None
            self.geometry.paste(canvas, frame, tile.y, tile.x, tile.pixel)
        low, high = contrast_limits(frame)
        if self.contrast is None or low < self.contrast[0] or high > self.contrast[1]:
            old = self.contrast or (low, high)
            self.contrast = (min(old[0], low), max(old[1], high))
            if self.layer is not None:
                self.layer.contrast_limits = self.contrast
        return rebuild, position

    def _grow(self, tile: _Tile) -> bool:
        if self.geometry is None:
            self.geometry = _Canvas(tile)
            return True
        old = copy.copy(self.geometry)
        if not self.geometry.grow(tile):
            return False
        for key, canvas in self.canvases.items():
            self.canvases[key] = self.geometry.moved(old, canvas, self.dtype)
        return True

    def canvas(self, coords: Mapping[str, Any]) -> np.ndarray:
        """The canvas at ``coords`` (the values of the other axes), pasted again if not kept."""
        key = self._key(coords)
        canvas = self.canvases.get(key)
        if canvas is None:
            assert self.geometry is not None
            canvas = np.zeros(self.geometry.shape, self.dtype)
            for tile in self.tiles.get(key, {}).values():
                try:
                    frame = self.mosaic.handler.get(tile.coords, return_metadata=False)
                except KeyError:
                    continue
                self.geometry.paste(canvas, np.asarray(frame), tile.y, tile.x, tile.pixel)
            self.canvases[key] = canvas
            while len(self.canvases) > CANVASES_KEPT:
                self.canvases.popitem(last=False)
        else:
            self.canvases.move_to_end(key)
        return canvas

    def show(self) -> None:
        """Make the layer, or give it the canvas's new shape, place and axes."""
        geometry = self.geometry
        assert geometry is not None and self.contrast is not None
        mosaic = self.mosaic
        axes = aligned_axes(mosaic.viewer, self.axes, mosaic.own_layers())
        values = {a: self.indices[a].values if a in self.indices else () for a in axes}
        frames = LazyFrames(self.canvas, axes, values, geometry.shape, self.dtype, self.fixed)
        scale = [mosaic.scale.get(a, 1.0) for a in axes] + [geometry.step, geometry.step]
        translate = [0.0] * len(axes) + [geometry.y0, geometry.x0]
        metadata = {"axis_values": values, "mosaic": True}
        layer = self.layer
        if layer is not None and layer.data.ndim == frames.ndim:
            layer.data = frames
            layer.scale, layer.translate = scale, translate
            layer.metadata.update(metadata)
            return
        if layer is not None:
            mosaic.viewer.layers.remove(layer)
        self.layer = mosaic.viewer.add_image(
            frames,
            name=layer_name(mosaic.name, self.key),
            contrast_limits=self.contrast,
            colormap=mosaic.colormap(self.key),
            blending="additive",
            scale=scale,
            translate=translate,
            axis_labels=[*axes, "y", "x"],
            metadata=metadata,
            multiscale=False,
        )

    def slider_axes(self, position: Sequence[int]) -> Newest:
        """The layer's slider axes and ``position`` along them (0 along the others' axes)."""
        axes = list(self.layer.data.axes)
        return axes, [position[self.axes.index(a)] if a in self.indices else 0 for a in axes]


class Mosaic:
    """The tiles of a layer sink: frames at a tile axis with a stage position, on the GUI thread.

    ``key`` gives a frame's layer (camera and channel), ``layer_axes`` the axes that have a layer
    each, ``scale`` the physical step of other axes, ``colormap`` a layer's colormap, ``own`` the
    sink's other layers (left out when lining up axes with the viewer's)."""

    def __init__(
        self,
        viewer: Any,
        handler: DataHandler,
        name: str,
        key: Callable[[Mapping[str, Any]], Any],
        layer_axes: Sequence[str],
        scale: Mapping[str, float],
        colormap: Callable[[Any], Any],
        own: Callable[[], Iterable[Any]],
        planned: PlannedData | None = None,
    ) -> None:
        self.viewer, self.handler, self.name = viewer, handler, name
        self._key, self._layer_axes, self.scale = key, tuple(layer_axes), scale
        self.colormap, self._own = colormap, own
        self._planned = planned
        self._layers: dict[Any, _MosaicLayer] = {}
        self._unplaced = False  # a frame at a tile axis had no stage position: sliders then

    @property
    def layers(self) -> dict[Any, Any]:
        """The mosaic layers by channel name (``None`` without a channel)."""
        return {key: m.layer for key, m in self._layers.items() if m.layer is not None}

    def own_layers(self) -> list[Any]:
        """The sink's layers: the mosaic's and the others."""
        return [*self.layers.values(), *self._own()]

    def planned_index(self, axis: str) -> AxisIndex:
        """An index of ``axis`` holding its planned values (or size) already."""
        index = AxisIndex()
        planned = self._planned
        if planned is not None:
            for value in planned.axis_values.get(axis, ()):
                index.add(value)
            if planned.axis_sizes.get(axis):
                index.add(planned.axis_sizes[axis] - 1)
        return index

    def take(self, pending: list[DataCoordinates]) -> tuple[list[DataCoordinates], Newest | None]:
        """Paste the tiles of ``pending``; returns the other frames and where the newest tile is
        on the sliders (``None``: no tile)."""
        rest: list[DataCoordinates] = []
        rebuilt: set[Any] = set()
        touched: dict[Any, list[int]] = {}
        for coords in pending:
            if self._unplaced or TILE_AXES.isdisjoint(coords):
                rest.append(coords)
                continue
            frame, metadata = self.handler.get(coords)
            if stage_xy_um(metadata) is None:
                self._unplaced = True
                rest.append(coords)
                continue
            key = self._key(coords)
            layer = self._layers.get(key)
            if layer is None:
                fixed = {a: coords[a] for a in self._layer_axes if a in coords}
                layer = self._layers[key] = _MosaicLayer(self, key, fixed, np.asarray(frame).dtype)
            rebuild, touched[key] = layer.add(coords, np.asarray(frame), metadata)
            if rebuild:
                rebuilt.add(key)
        for key in rebuilt:
            self._layers[key].show()
        for key in set(touched) - rebuilt:
            self._layers[key].layer.refresh()
        if not touched:
            return rest, None
        last = next(reversed(touched))
        return rest, self._layers[last].slider_axes(touched[last])

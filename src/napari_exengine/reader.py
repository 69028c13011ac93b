"""npe2 reader: NDTiff dataset folders (or their ``NDTiff.index``), OME-Zarr images, collections
and plates (folders, or store URLs such as ``s3://bucket/run_1.ome.zarr``; ours and other
software's, such as ome-writers' and pymmcore-plus') and OME-TIFF files napari-exengine wrote
(``run_1.ome.tif``, finished or not) open as lazy layers. OME-TIFFs from other software are
declined (napari's own TIFF reader opens them).

Only the index (NDTiff) or the metadata and frame records (OME-Zarr) and one frame per channel (for
contrast limits) are read at open time; each slider move reads just the frames on screen. Channels
become one layer each; other axes become labelled sliders (string-valued axes map to integer
sliders, the mapping in ``layer.metadata['axis_values']``). Multi-resolution NDTiff datasets (tiled
row/column explores) open stitched, as multiscale layers; OME-Zarr opens at full resolution. Store
URLs are read with the credentials and endpoint of the ``AWS_*`` environment variables and AWS
config files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from exengine.channel_colors import channel_colormap
from exengine.storage.ndtiff_reader import NDTiffReader, find_dataset_root

from .layer_sink import contrast_limits, layer_name, sort_axes
from .lazy_array import LazyFrames

LayerData = tuple[Any, dict[str, Any], str]
_TILE_AXES = ("row", "column")


def get_reader(path: Any) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader when ``path`` is an NDTiff dataset folder or index or an OME-Zarr image, else
    None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    if is_omezarr(path):
        return read_omezarr
    if is_ometiff(path):
        return read_ometiff
    return None if find_dataset_root(path) is None else read_ndtiff


def is_omezarr(path: str | os.PathLike[str]) -> bool:
    """True for a store URL ending in ``.zarr`` or a folder (or its ``zarr.json``) holding an
    OME-Zarr image."""
    text = os.fspath(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) and not text.lower().startswith("file://"):
        return text.rstrip("/").endswith(".zarr")
    text = text[len("file://") :] if text.lower().startswith("file://") else text
    folder = os.path.dirname(text) if os.path.basename(text) in ("zarr.json", ".zattrs") else text
    for name in ("zarr.json", ".zattrs"):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                attributes = json.load(f)
        except (OSError, ValueError):
            continue
        attributes = (
            attributes.get("attributes", attributes) if isinstance(attributes, dict) else {}
        )
        ome = attributes.get("ome", attributes)
        # frame_metadatas: the zarr array of pymmcore-plus's TensorStoreHandler
        keys = ("multiscales", "bioformats2raw.layout", "plate", "frame_metadatas")
        return any(key in ome for key in keys)
    return False


def is_ometiff(path: str | os.PathLike[str]) -> bool:
    """True for a ``.ome.tif`` (``.ome.tiff``) file napari-exengine wrote (its first page carries a
    frame record); False for other software's, and without ``tifffile``."""
    text = os.fspath(path)
    if not (text.lower().endswith((".ome.tif", ".ome.tiff")) and os.path.isfile(text)):
        return False
    try:
        from exengine.storage.ometiff_reader import written_by_exengine
    except ImportError:
        return False
    return written_by_exengine(text)


def read_omezarr(path: Any, split_channels: bool = True) -> list[LayerData]:
    """Open the OME-Zarr image at ``path`` (a folder or a store URL) as napari layer data (lazy)."""
    from exengine.storage.omezarr_reader import OMEZarrDataset

    if isinstance(path, list):
        path = path[0]
    dataset = OMEZarrDataset(path)
    if not dataset.levels:
        raise ValueError(f"{dataset.path} holds no frames yet")
    values = dataset.axes
    channel_axis = dataset.channel_axis if dataset.channel_axis in values else None
    channels = values[channel_axis] if split_channels and channel_axis else [None]
    slider_axes = [a for a in values if a != channel_axis or not split_channels]
    array = dataset.array
    y, x = dataset.axis_names[-2:]
    # napari needs positive scales (pymmcore-plus records a time interval of 0 as a scale of 0)
    scale = [_positive(dataset.scale.get(a)) for a in [*slider_axes, y, x]]
    name = dataset.path.replace(os.sep, "/").rstrip("/").rsplit("/", 1)[-1]

    read = _frame_reader(dataset)
    layers = []
    for i, channel in enumerate(channels):
        fixed = {} if channel is None else {channel_axis: channel}
        data = LazyFrames(
            read,
            slider_axes,
            {a: values[a] for a in slider_axes},
            array.shape[-2:],
            array.dtype,
            fixed=fixed,
        )
        sample = next(
            (c for c in dataset.coordinates() if all(c[a] == v for a, v in fixed.items())), None
        )
        frame = read(dict(sample)) if sample is not None else None
        metadata = {
            **_layer_metadata(dataset, {a: values[a] for a in slider_axes}, fixed),
            "dataset": dataset,
        }
        layers.append(
            (
                data,
                {
                    "name": layer_name(name, channel),
                    "metadata": metadata,
                    "scale": scale,
                    "axis_labels": [*slider_axes, y, x],
                    "contrast_limits": contrast_limits(
                        frame if frame is not None else np.zeros((1, 1), array.dtype)
                    ),
                    **_channel_look(channel, i, len(channels)),
                },
                "image",
            )
        )
    return layers


def _positive(scale: float | None) -> float:
    """``scale`` when it is a positive, finite number, else 1."""
    return float(scale) if scale is not None and 0 < scale < float("inf") else 1.0


def read_ometiff(path: Any, split_channels: bool = True) -> list[LayerData]:
    """Open an OME-TIFF file napari-exengine wrote as napari layer data (lazy), from its pages'
    records: also a file still being written or one a crash left without its OME-XML."""
    from exengine.storage.ometiff_reader import OMETiffDataset

    if isinstance(path, list):
        path = path[0]
    dataset = OMETiffDataset(path)
    if not len(dataset):
        raise ValueError(f"{dataset.path} holds no frames yet")
    values = dataset.axes
    channels = values.get("channel", [None]) if split_channels else [None]
    slider_axes = sort_axes([a for a in values if a != "channel" or not split_channels])
    recorded = dataset.summary_metadata.get("AxisOrder")
    if isinstance(recorded, list) and sorted(recorded) == sorted(slider_axes):
        slider_axes = list(recorded)
    axis_scales = dataset.summary_metadata.get("AxisScales")
    axis_scales = axis_scales if isinstance(axis_scales, dict) else {}
    pixel, z_step = dataset.pixel_size_um() or 1.0, dataset.z_step_um() or 1.0
    scale = [float(axis_scales.get(a, z_step if a == "z" else 1.0)) for a in slider_axes]
    name = os.path.basename(dataset.path)
    read = _frame_reader(dataset)
    layers = []
    for i, channel in enumerate(channels):
        fixed = {} if channel is None else {"channel": channel}
        shown = {a: values[a] for a in slider_axes}
        data = LazyFrames(read, slider_axes, shown, dataset.frame_shape, dataset.dtype, fixed)
        sample = next(
            (c for c in dataset.coordinates() if all(c[a] == v for a, v in fixed.items())), None
        )
        frame = read(sample) if sample is not None else None
        kwargs = {
            "name": layer_name(name, channel),
            "metadata": {**_layer_metadata(dataset, shown, fixed), "dataset": dataset},
            "scale": [*scale, pixel, pixel],
            "axis_labels": [*slider_axes, "y", "x"],
            "contrast_limits": contrast_limits(
                frame if frame is not None else np.zeros((1, 1), data.dtype)
            ),
            **_channel_look(channel, i, len(channels)),
        }
        layers.append((data, kwargs, "image"))
    return layers


def read_ndtiff(path: Any, split_channels: bool = True) -> list[LayerData]:
    """Open the NDTiff dataset at ``path`` as napari layer data (lazy)."""
    if isinstance(path, list):
        path = path[0]
    reader = NDTiffReader(path)
    if not reader.entries:
        raise ValueError(f"{reader.path} holds no frames yet")
    return layers_for(reader, split_channels=split_channels)


def layers_for(reader: NDTiffReader, split_channels: bool = True) -> list[LayerData]:
    """Layer data for an opened dataset: one layer per channel (or one with a channel axis)."""
    axes_values = reader.axes
    stitched = reader.multiresolution and all(a in axes_values for a in _TILE_AXES)
    channels = axes_values.get("channel", [None]) if split_channels else [None]
    slider_axes = sort_axes(
        [
            a
            for a in axes_values
            if (a != "channel" or not split_channels) and not (stitched and a in _TILE_AXES)
        ]
    )
    recorded = reader.summary_metadata.get("AxisOrder")
    if isinstance(recorded, list) and sorted(recorded) == sorted(slider_axes):
        slider_axes = list(recorded)
    axis_scales = reader.summary_metadata.get("AxisScales")
    axis_scales = axis_scales if isinstance(axis_scales, dict) else {}
    first = reader.first_entry()
    pixel = reader.pixel_size_um() or 1.0
    z_step = reader.z_step_um() or 1.0
    name = os.path.basename(os.path.normpath(reader.path))
    layers = []
    for i, channel in enumerate(channels):
        fixed = {} if channel is None else {"channel": channel}
        values = {a: axes_values[a] for a in slider_axes}
        if stitched:
            tiles = (axes_values["row"], axes_values["column"])
            data: Any = [
                _StitchedLevel(reader, level, slider_axes, values, fixed, tiles)
                for level in range(len(reader.levels))
            ]
            data = [d for j, d in enumerate(data) if j == 0 or d.shape[-2] < data[j - 1].shape[-2]]
            sample = data[-1][tuple(0 for _ in slider_axes)]
        else:
            data = LazyFrames(
                _frame_reader(reader), slider_axes, values, first.shape, first.dtype, fixed=fixed
            )
            sample = _sample(reader, fixed)
        scale = [float(axis_scales.get(a, z_step if a == "z" else 1.0)) for a in slider_axes] + [
            pixel,
            pixel,
        ]
        metadata = {**_layer_metadata(reader, values, fixed), "reader": reader}
        kwargs: dict[str, Any] = {
            "name": layer_name(name, channel),
            "metadata": metadata,
            "scale": scale,
            "axis_labels": [*slider_axes, "y", "x"],
            "multiscale": stitched,
            "rgb": first.rgb,
        }
        if not first.rgb:
            kwargs["contrast_limits"] = contrast_limits(sample)
            kwargs.update(_channel_look(channel, i, len(channels)))
        layers.append((data, kwargs, "image"))
    return layers


def _layer_metadata(source: Any, values: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """What a layer of ``source`` (an NDTiff reader or an OME-Zarr dataset) keeps in its
    metadata."""
    return {
        "path": source.path,
        "summary_metadata": source.summary_metadata,
        "axis_values": {a: list(v) for a, v in values.items()},
        "fixed_coordinates": fixed,
        "read_frame_metadata": lambda coords: source.read_metadata({**fixed, **coords}),
    }


def _channel_look(channel: Any, index: int, count: int) -> dict[str, str]:
    """Colormap and blending of the layer of ``channel``, the ``index``-th of ``count``."""
    return {
        "colormap": "gray" if channel is None or count == 1 else channel_colormap(channel, index),
        "blending": "additive" if count > 1 else "translucent",
    }


def _frame_reader(reader: Any) -> Callable[[dict[str, Any]], np.ndarray | None]:
    def read(coords: dict[str, Any]) -> np.ndarray | None:
        try:
            return reader.read_frame(coords)
        except KeyError:
            return None

    return read


def _sample(reader: NDTiffReader, fixed: dict[str, Any]) -> np.ndarray:
    for key, entry in reader.entries.items():
        coords = dict(key)
        if all(coords.get(a) == v for a, v in fixed.items()):
            return reader.levels[0].read_frame(entry)
    return np.zeros(reader.first_entry().shape, reader.first_entry().dtype)


class _StitchedLevel:
    """One resolution level of a tiled dataset, stitched into (axes..., y, x[, rgb]) on demand."""

    def __init__(
        self,
        reader: NDTiffReader,
        level: int,
        axes: list[str],
        values: dict[str, list[Any]],
        fixed: dict[str, Any],
        tiles: tuple[list[int], list[int]],
    ) -> None:
        self._reader = reader
        self._level = reader.levels[level]
        first = reader.first_entry()
        self._tile = (first.height, first.width)
        summary = reader.summary_metadata
        self._overlap = (
            int(summary.get("GridPixelOverlapY", 0) or 0),
            int(summary.get("GridPixelOverlapX", 0) or 0),
        )
        rows, cols = tiles
        step_y, step_x = self._tile[0] - self._overlap[0], self._tile[1] - self._overlap[1]
        self._origin = (min(rows) * step_y, min(cols) * step_x)
        full_shape = ((max(rows) - min(rows) + 1) * step_y, (max(cols) - min(cols) + 1) * step_x)
        self.factor = self._level.factor
        plane = (-(-full_shape[0] // self.factor), -(-full_shape[1] // self.factor))
        self._rgb = first.rgb
        self._frames = LazyFrames(
            self._plane, axes, values, plane + ((3,) if first.rgb else ()), first.dtype, fixed=fixed
        )
        self.dtype = self._frames.dtype
        self.shape = self._frames.shape
        self.ndim = self._frames.ndim
        self.size = self._frames.size

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._frames[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._frames, dtype=dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def _plane(self, coords: dict[str, Any]) -> np.ndarray:
        height, width = self._frames.shape[len(self._frames.axes) :][:2]
        plane = np.zeros(self._frames.shape[len(self._frames.axes) :], self.dtype)
        (th, tw), (oy, ox), f = self._tile, self._overlap, self.factor
        for key, entry in self._level.entries.items():
            tile_coords = dict(key)
            row, col = tile_coords.pop("row", None), tile_coords.pop("column", None)
            if row is None or col is None or tile_coords != coords:
                continue
            tile = self._level.read_frame(entry)
            if f == 1:
                tile = tile[oy // 2 : th - (oy - oy // 2), ox // 2 : tw - (ox - ox // 2)]
                y0, x0 = row * (th - oy) - self._origin[0], col * (tw - ox) - self._origin[1]
            else:
                y0, x0 = row * th - self._origin[0] // f, col * tw - self._origin[1] // f
            _paste(plane, tile, y0, x0, height, width)
        return plane


def _paste(plane: np.ndarray, tile: np.ndarray, y0: int, x0: int, height: int, width: int) -> None:
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + tile.shape[0], height), min(x0 + tile.shape[1], width)
    if ye > ys and xe > xs:
        plane[ys:ye, xs:xe] = tile[ys - y0 : ye - y0, xs - x0 : xe - x0]


def refresh_layers(layers: Any) -> int:
    """Pick up frames written since the dataset layers were opened (for datasets still being
    written).

    ``layers`` is a napari layer list (e.g. ``viewer.layers``) or a list of layers; returns the
    number of new frames found.
    """
    found = 0
    refreshed: dict[int, list[LayerData]] = {}
    for layer in list(layers):
        reader = layer.metadata.get("reader") if isinstance(layer.metadata, dict) else None
        if not isinstance(reader, NDTiffReader):
            continue
        if id(reader) not in refreshed:
            found += reader.refresh()
            refreshed[id(reader)] = layers_for(
                reader,
                split_channels="channel" in layer.metadata["fixed_coordinates"]
                or "channel" not in reader.axes,
            )
        for data, kwargs, _ in refreshed[id(reader)]:
            if kwargs["name"] == layer.name:
                layer.data = data
                layer.metadata.update(kwargs["metadata"])
    return found

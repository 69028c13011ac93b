"""``LayerSink``: shows frames of a ``DataHandler`` in napari layers whose sliders are the
coordinate axes.

The handler's listener runs on pipeline threads and only records coordinates; a timer on the GUI
thread turns them into layer updates every 33 ms (counted from the start of one update to the
next); every 66 ms while frames arrive faster than the display shows them but the storage keeps
up (a camera's pace: each frame is shown within ~100 ms); and at most every 500 ms while the
storage is behind (full speed), so that redrawing leaves the CPU to the acquisition: the backlog
is sampled every 33 ms meanwhile, and redraws resume as soon as it drains. Whatever the pace, the
sink measures what a refresh costs the GUI thread (painting included) and, where there is no GPU,
a software OpenGL renderer's threads (:mod:`~napari_exengine.paint_cost`), and spaces refreshes
so that each takes at most half a core (``MAX_GUI_SHARE``): a slow machine or a large screen
shows fewer frames, never slows the camera. Frames are shown at full resolution (at 2048x2048 a
refresh costs napari about what it does at 512x512 here). Moving the sliders slices each layer
once (napari would slice it twice). Layers read frames lazily through ``DataHandler.get`` (memory
while in flight or among the newest stored, else storage), so layer memory stays bounded. While a
sink follows an acquisition, the objects that existed before are kept out of the garbage
collector's full collections, which in a napari session hold the GIL for ~130 ms. Frames at a
stage position are shown there: at a tile axis, in the mosaic (:mod:`~napari_exengine.mosaic`);
other layers are placed by their first frame. Layers' axes are lined up by name with other
acquisitions' in the same viewer."""

from __future__ import annotations

import gc
import itertools
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from exengine.channel_colors import channel_colormap
from exengine.data import DataCoordinates, DataHandler, FrameStage, PlannedData
from exengine.storage.ndtiff_reader import positive_number

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
from .mosaic import Mosaic
from .paint_cost import PaintClock
from .slider_follow import SliderFollow

#: Time from the start of one display refresh to the next, while frames arrive at camera-like rates.
REFRESH_INTERVAL_MS = 33
#: The same when frames arrive faster than the display shows them (more than ``BUSY_FRAMES`` per
#: refresh) while the storage keeps up, as at a camera's pace: each frame is still shown within ~100
#: ms.
FAST_REFRESH_INTERVAL_MS = 66
#: The same when the storage also falls behind (more than ``BUSY_BACKLOG_FRAMES`` in flight), as at
#: full speed: a pause after each redraw, which yields the CPU to the acquisition (two redraws a
#: second). The backlog is sampled every ``BUSY_SAMPLE_MS`` meanwhile; once it drains, redraws
#: resume at once.
BUSY_REFRESH_INTERVAL_MS = 500
BUSY_SAMPLE_MS = 33
#: The most of one core the GUI thread takes while frames arrive, and the most a software OpenGL
#: renderer's threads take: the sink measures what each refresh costs each of them (``PaintClock``:
#: the CPU time from one refresh to the next; on the GUI thread, the sink's refresh, napari's
#: slicing and painting, other events) and spaces refreshes so that the larger cost over the
#: interval stays below this share, whatever the machine, screen and frame size (but at least two
#: refreshes a second).
MAX_GUI_SHARE = 0.5
#: Intervals (but the busy one) count from the start of a refresh; the next one waits at least this
#: long after its end, so that napari paints in between.
MIN_GAP_MS = 15
BUSY_FRAMES = 8
#: About 130 ms of frames at a camera's 500 frames/s of 512x512 (a stall of the storage that long),
#: and what full speed leaves in flight 33 ms after the start. Counted in frames, not bytes: an
#: sCMOS camera's 100 frames/s of 2048x2048 keep a few frames (tens of MB) in flight while the
#: storage keeps up.
BUSY_BACKLOG_FRAMES = 64
#: Plans longer than this (and open-ended ones) start acquiring before their layers are made: making
#: napari layers takes 0.1-0.15 s of the GUI thread (one or two layers), and for a short plan it is
#: cheaper done first (made alongside the acquisition's threads it took 2.5x as long, and slowed
#: them).
DEFER_LAYERS_ABOVE_FRAMES = 10_000
_DEFAULT_FRAME_BYTES = 512 * 512 * 2  # until the first layer is made


_following = 0  # sinks following an acquisition (GUI thread only)


def _freeze_collector() -> None:
    """While sinks follow acquisitions, the objects that existed before are left out of the cyclic
    garbage collector's full collections (``gc.freeze``). In a napari session a full collection
    walks every napari, vispy and Qt object: about 130 ms holding the GIL, which stalls the
    acquisition's threads and the display at once (the longest delays before a frame was shown)."""
    global _following
    if not _following:
        gc.freeze()
    _following += 1


def _thaw_collector() -> None:
    """The last sink stopped following: the frozen objects are collected as usual again."""
    global _following
    _following -= 1
    if not _following:
        gc.unfreeze()


def defer_layers_for(total_frames: int | None) -> bool:
    """Whether a plan of ``total_frames`` (``None``: open-ended) should start before its layers are
    made."""
    return total_frames is None or total_frames > DEFER_LAYERS_ABOVE_FRAMES


@dataclass
class _LayerState:
    """What the sink knows of one layer: its slider axes (display order) and the channel it is
    fixed to, each axis's values by slider index, the frames' shape and dtype, the contrast and the
    pixel size (µm); ``provisional`` until the first frame of a layer made in advance arrives."""

    axes: list[str]
    fixed: dict[str, Any]
    indices: dict[str, AxisIndex]
    frame_shape: tuple[int, ...]
    dtype: Any
    contrast: tuple[float, float]
    pixel: float
    provisional: bool = False
    #: The world (y, x) of the frames' top-left corner (µm): centred on their stage position.
    corner: tuple[float, float] = (0.0, 0.0)

    def position(self, coords: Mapping[str, Any]) -> tuple[int, ...]:
        """The slider indices of ``coords`` along the axes (new values get the next index)."""
        indices = self.indices
        return tuple(indices[a].add(coords[a]) if a in coords else 0 for a in self.axes)

    def sizes(self) -> list[int]:
        return [len(self.indices[a]) for a in self.axes]


#: Per layer planned in advance: its first coordinates, and the planned values of each axis.
_Plan = dict[Any, tuple[DataCoordinates, dict[str, tuple[Any, ...]]]]


ACQUIRED_KEPT = 4096  # frames whose acquisition order the sink keeps: its memory stays flat


class LayerSink:
    """Feeds frames of ``data_handler`` into layers of ``viewer``.

    One layer per channel (``split_channels=True``) named ``<name> <channel>``, or one layer with a
    channel axis; with several cameras (a ``camera`` axis), one layer per camera (and channel).
    Other axes become labelled sliders that grow as new indices arrive; sliders follow the newest
    frame unless the user moves them. ``scale`` maps axis names (and ``y``/``x``) to physical step
    sizes; the pixel size comes from the frames' ``PixelSizeUm`` metadata when present. ``planned``
    (what the acquisition will store, by default what its data handler was told: the axes and their
    sizes and values, the frame shape, dtype and pixel size, the z step of the summary metadata)
    sizes the sliders up front, so layers are not rebuilt as axes grow; with a frame shape, the
    layers are created at once (``defer_layers``: on the GUI loop's next turn, so that an
    acquisition started right after is not held up by napari making layers), before any frame, and
    fill in as frames arrive (a first frame of another shape or dtype rebuilds its layer; other
    pixel size metadata rescales it). Frames at a tile axis (``position``, ``row``, ``column``...)
    with a stage position in their metadata go to a mosaic instead, without sliders for those axes.
    Create it on the GUI thread.
    """

    def __init__(
        self,
        viewer: Any,
        data_handler: DataHandler,
        name: str = "Acquisition",
        split_channels: bool = True,
        scale: dict[str, float] | None = None,
        stage: FrameStage = FrameStage.STORED,
        planned: PlannedData | None = None,
        defer_layers: bool = False,
    ) -> None:
        self.viewer = viewer
        self.handler = data_handler
        self.name = name
        self.split_channels = split_channels
        #: Axes whose values have a layer each: the camera, and the channel when split.
        self._layer_axes = ("camera", "channel") if split_channels else ("camera",)
        planned = planned if planned is not None else data_handler.planned
        self._scale = _planned_scale(planned) | dict(scale or {})
        self._stage = stage
        self._pending: list[DataCoordinates] = []
        self._pending_lock = threading.Lock()
        #: Acquisition order of frames not yet shown (stored out of order, e.g. by NDTiff)
        self._acquired: dict[DataCoordinates, int] = {}
        self._acquired_count = 0
        self._newest: tuple[int, DataCoordinates] | None = None  # the newest shown, and its rank
        self._layers: dict[Any, Any] = {}
        self._state: dict[Any, _LayerState] = {}
        self._busy = False  # the storage was behind at the last refresh
        self._quiet_until = 0.0  # while busy: no redraw before this (time.monotonic())
        self._frame_bytes = _DEFAULT_FRAME_BYTES  # the newest layer's frame size
        self._sliders = SliderFollow(viewer)
        self._planned = self._plan_layers(planned)
        self._mosaic = Mosaic(
            viewer, data_handler, name, self._key, self._layer_axes, self._scale,
            self._colormap, lambda: self._layers.values(), planned,
        )  # fmt: skip
        self._axis_sizes = {a: s for a, s in (planned.axis_sizes if planned else {}).items() if s}
        self.frames_shown = 0
        #: The refresh interval in use: ``REFRESH_INTERVAL_MS``, ``FAST_REFRESH_INTERVAL_MS`` or
        #: ``BUSY_REFRESH_INTERVAL_MS``, or longer when refreshes cost more (``MAX_GUI_SHARE``).
        self.interval_ms = REFRESH_INTERVAL_MS
        #: What a refresh costs (ms, smoothed): the CPU time from one refresh to the next of the GUI
        #: thread or of a software renderer's threads, whichever is more.
        self.refresh_cost_ms = 0.0
        self._paint_clock = PaintClock()
        self._refresh_cpu: tuple[float, float] | None = None  # the paint clock at the last refresh
        self._layers_made = False  # since then: not a refresh's usual cost
        # Single-shot, restarted when a refresh ends (``MIN_GAP_MS`` at least): redraws
        # never queue up.
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._closed = False
        # holds the collector off (until the handler finishes or the sink closes)
        self._frozen = True
        _freeze_collector()
        data_handler.add_listener(self._on_frame)
        self._unprepared: tuple[tuple[int, ...], np.dtype, float] | None = None
        if planned is not None and planned.frame_shape is not None and self._planned:
            dtype = np.dtype(planned.dtype or np.uint16)
            self._unprepared = (tuple(planned.frame_shape), dtype, planned.pixel_size_um or 1.0)
            if defer_layers:  # the acquisition starts first; layers appear on the next turn
                QTimer.singleShot(0, self._prepare_layers)
            else:
                self._prepare_layers()
        self._timer.start()

    @property
    def layers(self) -> dict[Any, Any]:
        """Layers by channel name (``None`` for data without a channel, or when not split)."""
        return dict(self._layers)

    def _on_frame(self, stage: FrameStage, coords: DataCoordinates | None) -> None:
        if coords is None:
            return
        if stage == FrameStage.ACQUIRED and self._stage != FrameStage.ACQUIRED:
            with self._pending_lock:
                self._acquired[coords] = self._acquired_count
                self._acquired_count += 1
                if len(self._acquired) > ACQUIRED_KEPT:  # frames a processor replaced, or failed
                    del self._acquired[next(iter(self._acquired))]
        elif stage == self._stage:
            with self._pending_lock:
                self._pending.append(coords)

    def close(self) -> None:
        """Stop following the handler (layers stay)."""
        self._thaw()
        self._closed = True
        self._timer.stop()
        self.handler.remove_listener(self._on_frame)
        self.refresh()

    def _thaw(self) -> None:
        if self._frozen:
            self._frozen = False
            _thaw_collector()

    def _tick(self) -> None:
        if self._busy and time.monotonic() < self._quiet_until and self._storage_behind():
            self._timer.start(BUSY_SAMPLE_MS)  # no redraw yet: the acquisition needs the CPU
            return
        shown = self.frames_shown
        started = time.monotonic()
        self._measure_cost()
        try:
            self.refresh()
            # following on for a script's sink: collect as usual again
            if self.handler.is_finished():
                self._thaw()
        finally:
            if not self._closed:
                self._busy = self._storage_behind()
                self._schedule(self.frames_shown - shown, started)

    def _measure_cost(self) -> None:
        """Note what the last refresh cost in ``refresh_cost_ms``: the GUI thread's CPU time since
        it began (painting included) or the software renderer's, whichever is more; unless layers
        were made meanwhile (once per acquisition, and when a frame's shape or axes change)."""
        cpu = self._paint_clock.read()
        if self._refresh_cpu is not None and not self._layers_made:
            cost = max(now - last for now, last in zip(cpu, self._refresh_cpu, strict=True)) * 1000
            smoothed = self.refresh_cost_ms
            self.refresh_cost_ms = cost if not smoothed else 0.7 * smoothed + 0.3 * cost
        self._refresh_cpu = cpu
        self._layers_made = False

    def _schedule(self, arrived: int, started: float) -> None:
        """Start the timer for the next refresh, after one that began at ``started`` and showed
        ``arrived`` new frames: at a camera's pace refreshes start every interval, no more often
        than ``MAX_GUI_SHARE`` allows; when busy, the interval is a pause during which the backlog
        is sampled."""
        interval = REFRESH_INTERVAL_MS
        if arrived > BUSY_FRAMES:
            interval = BUSY_REFRESH_INTERVAL_MS if self._busy else FAST_REFRESH_INTERVAL_MS
        if interval != BUSY_REFRESH_INTERVAL_MS:  # at least two refreshes a second
            cost_bound = round(self.refresh_cost_ms / MAX_GUI_SHARE)
            interval = max(interval, min(cost_bound, BUSY_REFRESH_INTERVAL_MS))
        self.interval_ms = interval
        now = time.monotonic()
        if interval == BUSY_REFRESH_INTERVAL_MS:
            self._quiet_until = now + interval / 1000
            self._timer.start(BUSY_SAMPLE_MS)
        else:
            self._timer.start(max(MIN_GAP_MS, round(interval - (now - started) * 1000)))

    def _storage_behind(self) -> bool:
        """More than ``BUSY_BACKLOG_FRAMES`` (of the newest layer's frame size) in flight: at full
        speed the backlog lasts (busy until it drains); at a camera's pace a stall of the storage
        drains at once, and redraws resume at the next sample."""
        return self.handler.bytes_in_flight > BUSY_BACKLOG_FRAMES * self._frame_bytes

    def refresh(self) -> None:
        """Apply the frames that arrived since the last refresh (GUI thread)."""
        self._prepare_layers()
        with self._pending_lock:
            pending, self._pending = self._pending, []
            acquired = {coords: self._acquired.pop(coords, -1) for coords in pending}
        self.frames_shown += len(pending)
        pending, newest = self._mosaic.take(pending)
        if newest is not None and not pending:
            self._follow(*newest, redraw=set())
        if not pending:
            return
        touched: dict[Any, tuple[int, ...]] = {}
        grown: set[Any] = set()
        for coords in pending:
            key = self._key(coords)
            state = self._state.get(key)
            if state is None:
                state = self._new_state(key, coords)
            elif state.provisional and self._settle(key, state, coords):
                grown.add(key)
            axes = state.axes
            for axis in coords:
                if axis not in axes and axis not in state.fixed:
                    axes.append(axis)
                    state.indices[axis] = AxisIndex()
                    state.axes = sort_axes(axes)
                    axes = state.axes
            sizes = [len(state.indices[a]) for a in axes]
            position = state.position(coords)
            if (
                key not in self._layers
                or [len(state.indices[a]) for a in axes] != sizes
                or axes != [a for a in self._layers[key].data.axes if a in state.indices]
            ):
                grown.add(key)
            touched[key] = position
        for key in grown:
            self._update_layer(key)
        newest = max(reversed(pending), key=lambda coords: acquired.get(coords, -1))
        rank = acquired.get(newest, -1)
        if rank < 0 or self._newest is None or rank > self._newest[0]:
            self._newest = (rank, newest)
        else:  # an older frame stored late: the sliders stay on the newest
            newest = self._newest[1]
        last = self._key(newest)
        self._follow(
            *self._slider_position(last, self._state[last].position(newest)),
            redraw=set(touched) - grown,
        )

    def _slider_position(self, key: Any, position: Sequence[int]) -> tuple[list[str], list[int]]:
        """The slider axes of the layer of ``key`` and ``position`` (its own axes' indices) along
        them: 0 along the axes it shares with other acquisitions' layers only."""
        state, axes = self._state[key], list(self._layers[key].data.axes)
        return axes, [position[state.axes.index(a)] if a in state.indices else 0 for a in axes]

    def _plan_layers(self, planned: PlannedData | None) -> _Plan:
        """Each planned layer's first coordinates and the planned values of its axes that are not
        ``0, 1, ...`` (those of the others come from their sizes)."""
        if (
            planned is None
            or not planned.axis_sizes
            or not TILE_AXES.isdisjoint(planned.axis_sizes)
        ):
            return {}  # tiles are placed by the mosaic as they arrive
        values = {axis: tuple(planned.axis_values.get(axis, ())) for axis in planned.axis_sizes}
        first = {axis: found[0] if found else 0 for axis, found in values.items()}
        split = [a for a in self._layer_axes if values.get(a)]
        plan: _Plan = {}
        for combination in itertools.product(*(values[a] for a in split)):
            coords = DataCoordinates({**first, **dict(zip(split, combination, strict=True))})
            plan[self._key(coords)] = (coords, values)
        return plan

    def _key(self, coords: Mapping[str, Any]) -> Any:
        """The layer of a frame: its camera and channel (``None``: the one layer)."""
        values = [coords[a] for a in self._layer_axes if a in coords]
        if not values:
            return None
        return values[0] if len(values) == 1 else " ".join(map(str, values))

    def _prepare_layers(self) -> None:
        """Create the planned layers before the first frame, with the dtype's full range as
        contrast."""
        if self._unprepared is None or self._closed:
            return
        frame_shape, dtype, pixel = self._unprepared
        self._unprepared = None
        contrast = (0.0, float(np.iinfo(dtype).max)) if dtype.kind in "ui" else (0.0, 1.0)
        for key, (first, _) in self._planned.items():
            self._make_state(key, first, frame_shape, dtype, contrast, pixel, provisional=True)
            self._update_layer(key)
        key, (first, _) = next(iter(self._planned.items()))
        state = self._state[key]
        # napari starts mid-range
        self._follow(*self._slider_position(key, state.position(first)), redraw=set())

    def _settle(self, key: Any, state: _LayerState, coords: DataCoordinates) -> bool:
        """Take contrast and pixel size from the first frame of a layer made in advance; True when
        the frame's shape or dtype differs from the plan, so the layer must be rebuilt."""
        data, metadata = self.handler.get(coords)
        state.provisional = False
        state.contrast = contrast_limits(data)
        layer = self._layers[key]
        layer.contrast_limits = state.contrast
        pixel = pixel_size_um(metadata, state.pixel)
        if not math.isclose(pixel, state.pixel):  # rescaling re-slices every layer: only if wrong
            state.pixel = pixel
            layer.scale = self._layer_scale(state, layer.data.axes)
        corner = _corner(metadata, data.shape, pixel)
        if corner != state.corner:
            state.corner = corner
            layer.translate = [0.0] * len(layer.data.axes) + list(corner)
        if data.shape == state.frame_shape and data.dtype == state.dtype:
            return False
        state.frame_shape, state.dtype = data.shape, data.dtype
        self._frame_bytes = data.nbytes
        return True

    def _new_state(self, key: Any, coords: DataCoordinates) -> _LayerState:
        data, metadata = self.handler.get(coords)
        pixel = pixel_size_um(metadata)
        state = self._make_state(key, coords, data.shape, data.dtype, contrast_limits(data), pixel)
        state.corner = _corner(metadata, data.shape, pixel)
        return state

    def _make_state(
        self,
        key: Any,
        coords: DataCoordinates,
        frame_shape: tuple[int, ...],
        dtype: Any,
        contrast: tuple[float, float],
        pixel: float,
        provisional: bool = False,
    ) -> _LayerState:
        fixed = {a: coords[a] for a in self._layer_axes if a in coords}
        axes = sort_axes([a for a in coords if a not in fixed])
        indices = {a: AxisIndex() for a in axes}
        planned_values = self._planned[key][1] if key in self._planned else {}
        for axis in axes:
            for value in planned_values.get(axis, ()):
                indices[axis].add(value)
            size = self._axis_sizes.get(axis)
            if size:
                indices[axis].add(size - 1)  # int axes are their own indices: sized at once
        state = _LayerState(axes, fixed, indices, frame_shape, dtype, contrast, pixel, provisional)
        self._state[key] = state
        self._frame_bytes = math.prod(frame_shape) * np.dtype(dtype).itemsize
        return state

    def _layer_scale(self, state: _LayerState, axes: Sequence[str]) -> list[float]:
        return [self._scale.get(a, 1.0) for a in axes] + [
            self._scale.get("y", state.pixel),
            self._scale.get("x", state.pixel),
        ]

    def _update_layer(self, key: Any) -> None:
        """Give the layer of ``key`` a new (lazy) data object: its axes grew or it is new."""
        state = self._state[key]
        axes = aligned_axes(self.viewer, state.axes, self._mosaic.own_layers())
        frames = LazyFrames(
            self._reader(state),
            axes,
            {a: state.indices[a].values if a in state.indices else () for a in axes},
            state.frame_shape,
            state.dtype,
            fixed=state.fixed,
        )
        labels = [*frames.axes, "y", "x"]
        scale = self._layer_scale(state, frames.axes)
        layer = self._layers.get(key)
        metadata = {"axis_values": {a: state.indices[a].values for a in state.axes}}
        if layer is None or layer.data.ndim != frames.ndim:
            self._layers_made = True
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_image(
                frames,
                name=layer_name(self.name, key),
                contrast_limits=state.contrast,
                colormap=self._colormap(key),
                blending="additive",
                scale=scale,
                translate=[0.0] * len(frames.axes) + list(state.corner),
                axis_labels=labels,
                metadata=metadata,
                multiscale=False,
            )
            self._layers[key] = layer
        else:
            layer.data = frames
            layer.metadata.update(metadata)

    def _colormap(self, key: Any) -> Any:
        """A new layer's colormap: gray for the one layer, else by the channel's dye."""
        shown = len(self._layers) + len(self._mosaic.layers)
        return "gray" if key is None else channel_colormap(key, shown)

    def _reader(self, state: _LayerState) -> Any:
        def read(coords: dict[str, Any]) -> np.ndarray | None:
            try:
                return self.handler.get(coords, return_data=True, return_metadata=False)
            except KeyError:  # not acquired (yet)
                return None

        return read

    def _follow(self, axes: list[str], newest: tuple[int, ...], redraw: set[Any]) -> None:
        """Move the sliders to the newest frame (unless the user moved them); else redraw ``redraw``
        layers."""
        if not self._sliders.follow(axes, newest):
            for key in redraw:
                self._layers[key].refresh()


def _corner(metadata: Any, frame_shape: Sequence[int], pixel: float) -> tuple[float, float]:
    """Where a frame's top-left corner is shown (µm): centred on its stage position, if known."""
    stage = stage_xy_um(metadata)
    return (0.0, 0.0) if stage is None else frame_corner_um(stage, frame_shape, pixel)


def _planned_scale(planned: PlannedData | None) -> dict[str, float]:
    """The z step the summary metadata records (Micro-Manager's ``z-step_um``), as a scale."""
    summary = planned.summary_metadata if planned is not None else {}
    step = positive_number(summary, ("z-step_um",))
    return {} if step is None else {"z": step}


def attach_layer_sink(viewer: Any, data_handler: DataHandler, **kwargs: Any) -> LayerSink:
    """Show the frames of ``data_handler`` in ``viewer`` as they are stored (call on the GUI
    thread).

    For ExEngine scripts run from the napari console::

        sink = attach_layer_sink(viewer, data_handler, name="My acquisition")
    """
    return LayerSink(viewer, data_handler, **kwargs)

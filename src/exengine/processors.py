"""Built-in processors, processor chains, and checking processor settings against a plan.

Each factory returns a :class:`~exengine.data.DataProcessor`. Arithmetic is done in floating point
and the result is clipped to the range of the input dtype and rounded, so nothing wraps around.

Accumulating processors (``frame_averaging``, ``max_intensity_projection``) are *stateful*: they
see frames in acquisition order, also on a Dask cluster. What they still hold when the acquisition
finishes is emitted by their ``flush`` as a partial result, marked ``metadata["Partial"] = True``,
never dropped. :func:`check_fits_plan` refuses settings that cannot fit a plan, before anything
runs, and :func:`fit_to_plan` also fills settings left to ``None`` ("from the plan").
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .kernel.data_coords import DataCoordinates
from .kernel.data_processor import DataProcessor, Frame

__all__ = [
    "BackgroundSubtraction",
    "FlatFieldCorrection",
    "FrameAveraging",
    "MaxIntensityProjection",
    "ProcessorChain",
    "background_subtraction",
    "check_fits_plan",
    "fit_to_plan",
    "flat_field_correction",
    "frame_averaging",
    "max_intensity_projection",
]

AxisSizes = Mapping[str, int | None]


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _load_image(reference: str | os.PathLike[str] | np.ndarray, what: str) -> np.ndarray:
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


def _positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or a ``ValueError`` naming the setting and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _finite_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _axis_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be an axis name such as 'time' or 'z', got {value!r}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _axes_text(axis_sizes: AxisSizes) -> str:
    return (
        ", ".join(
            f"{axis}={size if size is not None else '?'}" for axis, size in axis_sizes.items()
        )
        or "none"
    )


def _check_shape(
    title: str, what: str, image: np.ndarray | None, frame_shape: tuple[int, ...] | None
) -> None:
    if image is not None and frame_shape is not None and tuple(image.shape) != tuple(frame_shape):
        raise ValueError(
            f"{title}: the {what} is {tuple(image.shape)} pixels but the camera frames are "
            f"{tuple(frame_shape)}; use a {what} of the camera's frame size"
        )


class ProcessorChain(DataProcessor):
    """Runs processors one after another; each output frame of one feeds the next.

    ``flush`` flushes them in order, feeding what one still held through the ones after it. The
    chain is stateful when any of its processors is.
    """

    def __init__(self, processors: Sequence[DataProcessor | Callable[..., Any]]) -> None:
        self.processors = [
            p if isinstance(p, DataProcessor) else DataProcessor(p) for p in processors
        ]
        super().__init__(
            self._run, self._flush_all, stateful=any(p.stateful for p in self.processors)
        )

    def _run(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> list[Frame]:
        frames: list[Frame] = [(coords, data, metadata)]
        for processor in self.processors:
            frames = [out for frame in frames for out in processor.process(*frame)]
        return frames

    def _flush_all(self) -> list[Frame]:
        frames: list[Frame] = []
        for processor in self.processors:
            frames = [
                out for frame in frames for out in processor.process(*frame)
            ] + processor.flush()
        return frames

    def close(self) -> None:
        for processor in self.processors:
            processor.close()

    def check_plan(
        self, axis_sizes: AxisSizes, frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        notes: list[str] = []
        axes = dict(axis_sizes)
        for processor in self.processors:
            notes += processor.check_plan(axes, frame_shape)
            axes = processor.output_axes(axes)
        return notes

    def derive_from_plan(self, axis_sizes: AxisSizes) -> None:
        axes = dict(axis_sizes)
        for processor in self.processors:
            processor.derive_from_plan(axes)
            axes = processor.output_axes(axes)

    def output_axes(self, axis_sizes: AxisSizes) -> dict[str, int | None]:
        axes = dict(axis_sizes)
        for processor in self.processors:
            axes = processor.output_axes(axes)
        return axes

    def __repr__(self) -> str:
        return f"ProcessorChain({self.processors!r})"


class BackgroundSubtraction(DataProcessor):
    """Subtracts a dark frame or a constant level; clips at zero (stateless)."""

    def __init__(self, level: float = 100.0, dark_image: str | None = None) -> None:
        self.level = _finite_number("level", level)
        self.dark_image = dark_image
        self.dark = _load_image(dark_image, "dark image").astype(np.float64) if dark_image else None
        super().__init__(self._subtract, stateful=False)

    def _subtract(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Frame:
        dark = self.dark
        if dark is not None and dark.shape != data.shape:
            raise ValueError(
                f"The dark image is {dark.shape}; frames at {dict(coords)} are {data.shape}"
            )
        result = data.astype(np.float64) - (dark if dark is not None else self.level)
        return (
            coords,
            _to_dtype(np.maximum(result, 0), data.dtype),
            dict(metadata or {}, Background=(self.dark_image or self.level)),
        )

    def check_plan(
        self, axis_sizes: AxisSizes, frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        _check_shape("background_subtraction", "dark image", self.dark, frame_shape)
        return []


class FlatFieldCorrection(DataProcessor):
    """Divides by a flat field normalised to mean 1, after subtracting an optional dark frame
    (stateless)."""

    def __init__(self, flat_image: str, dark_image: str | None = None) -> None:
        flat = _load_image(flat_image, "flat-field image").astype(np.float64)
        dark = (
            _load_image(dark_image, "dark image").astype(np.float64)
            if dark_image
            else np.zeros_like(flat)
        )
        if dark.shape != flat.shape:
            raise ValueError(
                f"The dark image is {dark.shape} pixels but the flat-field image is {flat.shape}"
            )
        gain = flat - dark
        if np.any(gain <= 0):
            raise ValueError("The flat-field image must be brighter than the dark image everywhere")
        gain /= gain.mean()
        self.flat_image, self.dark, self.gain = flat_image, dark, gain
        super().__init__(self._correct, stateful=False)

    def _correct(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Frame:
        if data.shape != self.gain.shape:
            raise ValueError(
                f"The flat-field image is {self.gain.shape}; frames at {dict(coords)} are "
                f"{data.shape}"
            )
        result = np.maximum(data.astype(np.float64) - self.dark, 0) / self.gain
        return (
            coords,
            _to_dtype(result, data.dtype),
            dict(metadata or {}, FlatField=str(self.flat_image)),
        )

    def check_plan(
        self, axis_sizes: AxisSizes, frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        _check_shape("flat_field_correction", "flat-field image", self.gain, frame_shape)
        return []


class FrameAveraging(DataProcessor):
    """Averages every ``frames`` consecutive frames along ``axis`` into one (stateful).

    The average of frames ``k*frames ... (k+1)*frames - 1`` is stored at ``axis`` index ``k`` with
    the metadata of its last frame and ``AveragedFrames``. A group still incomplete at finish is
    emitted by ``flush`` as a partial average (``Partial: True``, ``AveragedFrames`` = frames it
    holds).
    """

    def __init__(self, frames: int = 4, axis: str = "time") -> None:
        self.frames = _positive_int("frames", frames)
        self.axis = _axis_name("axis", axis)
        # group coordinates -> (float64 sum, frames summed, dtype, metadata of the last frame)
        self._held: dict[DataCoordinates, tuple[np.ndarray, int, np.dtype, Any]] = {}
        super().__init__(self._average, self._flush_partial, stateful=True)

    def _average(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Frame | None:
        axis = self.axis
        if axis not in coords:
            raise KeyError(
                f"Frame averaging over {axis!r}, but frames at {dict(coords)} have no such axis"
            )
        group = DataCoordinates(coords)
        group[axis] = int(coords[axis]) // self.frames
        held = self._held.pop(group, None)
        if held is None:
            total, count = data.astype(np.float64), 1
        else:
            total, count = held[0], held[1] + 1
            total += data
        if count < self.frames:
            self._held[group] = (total, count, data.dtype, metadata)
            return None
        return (
            group,
            _to_dtype(total / count, data.dtype),
            dict(metadata or {}, AveragedFrames=count),
        )

    def _flush_partial(self) -> list[Frame]:
        held, self._held = self._held, {}
        return [
            (
                group,
                _to_dtype(total / count, dtype),
                dict(
                    metadata or {}, AveragedFrames=count, Partial=True, ExpectedFrames=self.frames
                ),
            )
            for group, (total, count, dtype, metadata) in held.items()
        ]

    def check_plan(
        self, axis_sizes: AxisSizes, frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        if self.axis not in axis_sizes:
            raise ValueError(
                f"frame_averaging averages along {self.axis!r}, but the plan has no {self.axis!r} "
                f"axis (its axes: {_axes_text(axis_sizes)}); set axis to one of them"
            )
        size = axis_sizes[self.axis]
        if size is None:
            return []
        if size < self.frames:
            raise ValueError(
                f"frame_averaging frames={self.frames} but the plan has {size} {self.axis} points, "
                f"so no average would be complete; use frames <= {size}"
            )
        if size % self.frames:
            return [
                f"frame_averaging frames={self.frames} does not divide {size} {self.axis} points: "
                f"the last average is of {size % self.frames} frame(s), stored marked Partial"
            ]
        return []

    def output_axes(self, axis_sizes: AxisSizes) -> dict[str, int | None]:
        axes = dict(axis_sizes)
        size = axes.get(self.axis)
        if size is not None:
            axes[self.axis] = -(-size // self.frames)
        return axes

    def __repr__(self) -> str:
        return f"FrameAveraging(frames={self.frames}, axis={self.axis!r})"


class MaxIntensityProjection(DataProcessor):
    """Projects the ``z_planes`` planes along ``axis`` of each stack into one frame (stateful).

    The projection has the stack's coordinates without ``axis`` plus ``projection="max"``, the
    metadata of the last plane and ``ProjectedPlanes``. ``z_planes=None`` (or 0) means "from the
    plan": set it with
    :func:`fit_to_plan`; left ``None``, each stack is held (one frame per stack) and projected when
    the handler finishes, since the frames alone cannot tell when a stack is complete. A stack still
    incomplete at finish is emitted by ``flush`` marked ``Partial: True``. ``keep_planes`` also
    passes every plane through.
    """

    def __init__(
        self, z_planes: int | None = None, keep_planes: bool = False, axis: str = "z"
    ) -> None:
        # 0 also means "from the plan": what an integer spin box shows for an unset optional int
        self.z_planes = (
            None
            if z_planes is None or (z_planes == 0 and not isinstance(z_planes, (bool, float)))
            else _positive_int("z_planes", z_planes)
        )
        self.keep_planes = _boolean("keep_planes", keep_planes)
        self.axis = _axis_name("axis", axis)
        # stack coordinates (without the axis) -> (running max, planes seen, metadata of
        # the last plane)
        self._held: dict[DataCoordinates, tuple[np.ndarray, int, Any]] = {}
        super().__init__(self._project, self._flush_partial, stateful=True)

    def _projection(
        self, rest: DataCoordinates, current: np.ndarray, count: int, metadata: Any, partial: bool
    ) -> Frame:
        extra: dict[str, Any] = {
            "Projection": f"max over {count} {self.axis}",
            "ProjectedPlanes": count,
        }
        if partial:
            extra.update(Partial=True, ExpectedPlanes=self.z_planes)
        return (
            DataCoordinates({**rest, "projection": "max"}),
            current,
            dict(metadata or {}, **extra),
        )

    def _project(
        self, coords: DataCoordinates, data: np.ndarray, metadata: Any
    ) -> list[Frame] | None:
        axis = self.axis
        if axis not in coords:
            raise KeyError(
                f"Projection over {axis!r}, but frames at {dict(coords)} have no such axis"
            )
        rest = DataCoordinates({k: v for k, v in coords.items() if k != axis})
        held = self._held.pop(rest, None)
        if held is None:
            current, count = data.copy(), 1
        else:
            current, count = np.maximum(held[0], data, out=held[0]), held[1] + 1
        outputs: list[Frame] = [(coords, data, metadata)] if self.keep_planes else []
        if count == self.z_planes:
            outputs.append(self._projection(rest, current, count, metadata, partial=False))
        else:
            self._held[rest] = (current, count, metadata)
        return outputs or None

    def _flush_partial(self) -> list[Frame]:
        held, self._held = self._held, {}
        return [
            self._projection(rest, current, count, metadata, partial=self.z_planes is not None)
            for rest, (current, count, metadata) in held.items()
        ]

    def check_plan(
        self, axis_sizes: AxisSizes, frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        if self.axis not in axis_sizes:
            raise ValueError(
                f"max_intensity_projection projects along {self.axis!r}, but the plan has no "
                f"{self.axis!r} axis (its axes: {_axes_text(axis_sizes)})"
            )
        size = axis_sizes[self.axis]
        if self.z_planes is None:
            return (
                []
                if size is None
                else [
                    "max_intensity_projection z_planes is unset: each stack is projected only "
                    f"when the acquisition finishes (set z_planes={size} to project each stack as "
                    "it completes)"
                ]
            )
        if size is not None and self.z_planes != size:
            raise ValueError(
                f"max_intensity_projection z_planes={self.z_planes} but the plan has {size} "
                f"{self.axis} planes; set z_planes={size} or leave it unset to take the plan's"
            )
        return []

    def derive_from_plan(self, axis_sizes: AxisSizes) -> None:
        if self.z_planes is None and axis_sizes.get(self.axis) is not None:
            self.z_planes = _positive_int("z_planes", axis_sizes[self.axis])

    def output_axes(self, axis_sizes: AxisSizes) -> dict[str, int | None]:
        axes = dict(axis_sizes)
        if not self.keep_planes:
            axes.pop(self.axis, None)
        axes["projection"] = 1
        return axes

    def __repr__(self) -> str:
        return (
            f"MaxIntensityProjection(z_planes={self.z_planes}, keep_planes={self.keep_planes}, "
            f"axis={self.axis!r})"
        )


def background_subtraction(level: float = 100.0, dark_image: str | None = None) -> DataProcessor:
    """Subtract a dark frame (``dark_image``: a .tif/.npy path) or a constant ``level``; clips at
    zero."""
    return BackgroundSubtraction(level, dark_image)


def flat_field_correction(flat_image: str, dark_image: str | None = None) -> DataProcessor:
    """Divide by a flat field normalised to mean 1 (after subtracting an optional dark frame)."""
    return FlatFieldCorrection(flat_image, dark_image)


def frame_averaging(frames: int = 4, axis: str = "time") -> DataProcessor:
    """Average every ``frames`` consecutive frames along ``axis`` into one (``axis`` index ÷
    ``frames``); a last, incomplete group is stored as a partial average marked ``Partial``."""
    return FrameAveraging(frames, axis)


def max_intensity_projection(
    z_planes: int | None = None, keep_planes: bool = False, axis: str = "z"
) -> DataProcessor:
    """Project ``z_planes`` planes along ``axis`` into one frame without that axis (and a
    ``projection`` coordinate ``"max"``); ``z_planes`` unset (None or 0) takes the plan's z count;
    ``keep_planes`` also passes every plane through."""
    return MaxIntensityProjection(z_planes, keep_planes, axis)


def _as_processor(processor: DataProcessor | Callable[..., Any] | None) -> DataProcessor | None:
    if processor is None or isinstance(processor, DataProcessor):
        return processor
    return DataProcessor(processor)


def check_fits_plan(
    processor: DataProcessor | Callable[..., Any] | None,
    axis_sizes: AxisSizes,
    frame_shape: tuple[int, ...] | None = None,
) -> list[str]:
    """Check a processor's settings against a plan, before anything runs.

    ``axis_sizes`` maps each axis of the plan to its number of values (``None`` when unknown, e.g.
    an open-ended time-lapse); ``frame_shape`` is the camera's frame shape, when known. Raises
    ``ValueError`` with a one-line reason naming the setting, its value and what would fit; returns
    one-line notes on what will happen but is allowed (e.g. a partial last average).
    """
    checked = _as_processor(processor)
    if checked is None:
        return []
    sizes = {str(axis): (None if size is None else int(size)) for axis, size in axis_sizes.items()}
    return checked.check_plan(sizes, None if frame_shape is None else tuple(frame_shape))


def fit_to_plan(
    processor: DataProcessor | Callable[..., Any] | None,
    axis_sizes: AxisSizes,
    frame_shape: tuple[int, ...] | None = None,
) -> list[str]:
    """Fill the settings left to ``None`` from the plan (e.g. ``z_planes``), then
    :func:`check_fits_plan`."""
    checked = _as_processor(processor)
    if checked is None:
        return []
    checked.derive_from_plan({str(axis): size for axis, size in axis_sizes.items()})
    return check_fits_plan(checked, axis_sizes, frame_shape)

"""The simulated camera: the specimen as a camera sees it, on the camera's own clock, into a finite
sequence buffer.

Frames arrive every ``max(exposure, 1 / frame_rate_limit)`` seconds from ``start()``, whether or
not anyone takes them. The sequence buffer holds ``sequence_buffer_mb`` of frames taken by the
camera and not yet popped; a frame that arrives while it is full is dropped and counted
(``frames_dropped``), as Micro-Manager's circular buffer does. A frame costs the camera little at
any size: its buffers are used again once nobody holds the frames they held (a ring of buffers, as
real cameras have: fresh memory costs several times more here), and its image is drawn into them
in one pass (0.9 ms at 2048 x 2048, 2.1 ms at 3200 x 3200).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from ..device_types import Detector
from ..kernel.device import Device
from .simulated_specimen import SimulatedMicroscope, render_clean

__all__ = ["DEFAULT_SEQUENCE_BUFFER_MB", "SimulatedCamera"]

#: The sequence buffer's size unless set (Micro-Manager's default circular buffer is 250 MB; an
#: sCMOS camera's driver typically keeps a second or more of frames).
DEFAULT_SEQUENCE_BUFFER_MB = 1024.0
#: Frame buffers made when a camera is armed (``_FramePool.prefill``), within its sequence buffer.
PREFILLED_FRAMES = 24
_NOISE_MAX = 64  # the noise (normal, sigma 12 counts) is clipped to +-this
_MAX_SENSOR_SIDE = 8192
_CACHE_PIXELS = 160 * 512 * 512  # clean images kept: 160 at 512 x 512, fewer for larger sensors
_SHORTEST_SLEEP_S = 2e-4
_PATTERNS = 4  # noise patterns; frame k gets pattern k % 4


class _Settings(NamedTuple):
    """The camera settings one frame is made with (read once per frame)."""

    exposure: float
    binning: int
    bit_depth: int
    roi: tuple[int, int, int, int]
    pixel_size_um: float

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(height, width) of a frame: the roi, binned."""
        return self.roi[3] // self.binning, self.roi[2] // self.binning

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint8 if self.bit_depth == 8 else np.uint16


class _FrameClock:
    """Which frames have arrived in the sequence buffer, which were dropped because it was full,
    and which are waiting to be popped. Arrivals are settled whenever the buffer is looked at:
    between two looks nothing was popped, so the frames that arrived meanwhile fill the room left
    and the rest are dropped, exactly as if the camera had pushed each one as it came."""

    def __init__(self) -> None:
        self.count: int | None = 0  # frames armed (None: until stopped)
        self.start = 0.0
        self.interval = 0.0
        self.capacity = 1
        self.capturing = False
        self.ended = False  # stopped since it began: no more frames will arrive
        self.arrived = 0  # frames that have arrived (kept or dropped)
        self.dropped = 0
        self.waiting: deque[int] = deque()  # indices of the frames in the buffer

    def arm(self, count: int | None) -> None:
        self.count, self.arrived, self.dropped = count, 0, 0
        self.capturing = self.ended = False  # until started
        self.waiting.clear()

    def begin(self, interval: float, capacity: int) -> None:
        self.start, self.interval, self.capacity = time.monotonic(), interval, max(1, capacity)
        self.arrived, self.dropped, self.capturing, self.ended = 0, 0, True, False
        self.waiting.clear()

    def settle(self, now: float) -> int:
        """Take in the frames that arrived by ``now``; returns how many were dropped."""
        if not self.capturing:
            return 0
        due = int((now - self.start) / self.interval) if self.interval > 0 else self.arrived + 1
        if self.count is not None:
            due = min(due, self.count)
        new = due - self.arrived
        if new <= 0:
            return 0
        kept = min(new, self.capacity - len(self.waiting))
        self.waiting.extend(range(self.arrived, self.arrived + kept))
        self.arrived = due
        self.dropped += new - kept
        return new - kept

    def exhausted(self) -> bool:
        return self.count is not None and self.arrived >= self.count

    def next_arrival(self) -> float:
        return self.start + (self.arrived + 1) * self.interval


def _refs_when_free() -> int:
    """What ``sys.getrefcount`` says of a buffer held by a list and one local name only, measured
    as ``_FramePool.take`` looks (the count differs between Python versions)."""
    buffers = [np.empty(1)]
    buffer = buffers[0]
    return sys.getrefcount(buffer)


_FREE_REFS = _refs_when_free()


class _FramePool:
    """Frame buffers used again once nobody holds them: a buffer is free when this pool holds the
    only reference to it (no frame, view or copy-on-write of it lives elsewhere). Up to
    ``limit_bytes`` of buffers are kept; beyond, frames get fresh memory."""

    def __init__(self) -> None:
        self._buffers: list[np.ndarray] = []
        self._next = 0
        self.limit_bytes = 0

    def take(self, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        """A buffer for a frame of ``shape`` and ``dtype``: the next free one in turn, a new one
        while the pool is below its limit, else fresh memory."""
        buffers, count = self._buffers, len(self._buffers)
        for step in range(count):
            slot = (self._next + step) % count
            buffer = buffers[slot]
            # held by the list and ``buffer`` only: nobody else
            if (
                sys.getrefcount(buffer) == _FREE_REFS
                and buffer.shape == shape
                and buffer.dtype == dtype
            ):
                self._next = (slot + 1) % count
                return buffer
        buffer = np.empty(shape, dtype)
        if (count + 1) * buffer.nbytes <= self.limit_bytes:
            buffers.append(buffer)
        return buffer

    def prefill(self, shape: tuple[int, int], dtype: Any, count: int) -> None:
        """Have ``count`` buffers of ``shape`` and ``dtype`` ready, within the limit, each written
        once: their memory is the process's before the first frame, as a camera driver's ring is
        allocated before it starts (fresh memory costs ~4.5 ms per 8 MB here, much more when the
        machine has to take it back from its host)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        have = sum(1 for b in self._buffers if b.shape == shape and b.dtype == dtype)
        while have < count and (len(self._buffers) + 1) * nbytes <= self.limit_bytes:
            buffer = np.empty(shape, dtype)
            buffer.fill(0)
            self._buffers.append(buffer)
            have += 1


class SimulatedCamera(Detector):
    """A camera that renders the simulated specimen, on its own clock into a finite buffer.

    ``exposure`` is in ms; frames arrive every ``max(exposure, 1 / frame_rate_limit)`` seconds. The
    sensor is ``width`` x ``height`` pixels, each 1 to 8192 (e.g. 2048 x 2048 or 2304 x 2304 as on
    sCMOS cameras). ``sequence_buffer_mb`` bounds the frames taken and not yet popped; frames that
    arrive while it is full are dropped and counted (``frames_dropped``, since the last ``arm``).
    """

    def __init__(
        self,
        name: str = "Camera",
        microscope: SimulatedMicroscope | None = None,
        width: int = 512,
        height: int = 512,
    ) -> None:
        for side, value in (("width", width), ("height", height)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 1 <= value <= _MAX_SENSOR_SIDE
            ):
                raise ValueError(
                    f"SimulatedCamera {side} must be a whole number of pixels from 1 to "
                    f"{_MAX_SENSOR_SIDE}, got {value!r}"
                )
        width, height = int(width), int(height)
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()
        self._sensor = (height, width)
        self.exposure = 10.0
        self.binning = 1
        self.bit_depth = 16
        self.frame_rate_limit = 100.0
        self.pixel_size_um = 0.65
        self._roi = (0, 0, width, height)
        self.sequence_buffer_mb = DEFAULT_SEQUENCE_BUFFER_MB
        self._lock = threading.Lock()
        self._clock = _FrameClock()
        self._pool = _FramePool()
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = (
            OrderedDict()
        )
        self._cache_size = max(8, _CACHE_PIXELS // (width * height))
        noise = np.clip(
            np.rint(np.random.default_rng(0).normal(0, 12, (_PATTERNS, height * width))),
            -_NOISE_MAX,
            _NOISE_MAX,
        )
        self._noise = noise.astype(np.int32)
        # The same noise wrapped into the frame dtypes: unsigned addition modulo 2**bits
        # is exact away from the limits
        self._wrapped_noise = {
            np.uint16: noise.astype(np.int16).view(np.uint16),
            np.uint8: noise.astype(np.int8).view(np.uint8),
        }

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        return {"binning": [1, 2, 4], "bit_depth": [8, 12, 16]}.get(property_name)

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        limits = {
            "exposure": (0.0, 10000.0),
            "frame_rate_limit": (1.0, 100000.0),
            "sequence_buffer_mb": (1.0, 65536.0),
        }
        return limits.get(property_name, (None, None))

    def is_property_read_only(self, property_name: str) -> bool:
        return property_name in ("pixel_size_um", "frames_dropped", "sensor_shape", "microscope")

    @property
    def microscope(self) -> SimulatedMicroscope:
        """The simulated microscope (stage, channel, light) this camera looks at."""
        return self._scope

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """The sensor's height and width in pixels."""
        return self._sensor

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """The region of the sensor read out: x, y, width, height (pixels of the sensor)."""
        return self._roi

    @roi.setter
    def roi(self, value: Any) -> None:
        self._roi = _checked_roi(self.name, value, self._sensor)

    @property
    def frames_dropped(self) -> int:
        """Frames that arrived since the last ``arm`` while the sequence buffer was full."""
        with self._lock:
            self._clock.settle(time.monotonic())
            return self._clock.dropped

    def arm(self, frame_count: int | None = None) -> None:
        if frame_count is not None and (not isinstance(frame_count, int) or frame_count < 0):
            raise ValueError(
                f"{self.name}: frame_count must be a non-negative int or None, got {frame_count!r}"
            )
        _check_choice(self, "binning", self.binning)
        _check_choice(self, "bit_depth", self.bit_depth)
        _, _, w, h = self.roi  # fits the sensor: checked when set
        if w < self.binning or h < self.binning:
            raise ValueError(
                f"{self.name}: binning {self.binning} leaves no pixels of the {w}x{h} roi; "
                f"use a binning of at most {min(w, h)} or a larger roi"
            )
        with self._lock:
            self._clock.arm(frame_count)
        self._prepare_first_frames(frame_count)
        self._prepare_buffers(frame_count)

    def _prepare_buffers(self, frame_count: int | None) -> None:
        """The sequence buffer's first ``PREFILLED_FRAMES`` buffers, made now rather than by the
        first frames (as many as a ``DataHandler`` usually holds at once)."""
        capacity = self._capacity()
        self._pool.limit_bytes = self._buffer_bytes()
        count = min(capacity, PREFILLED_FRAMES, capacity if frame_count is None else frame_count)
        settings = self._settings()
        self._pool.prefill(settings.frame_shape, settings.dtype, count)

    def _prepare_first_frames(self, frame_count: int | None) -> None:
        """Make the clean images of the sequence's first frames now, before any camera starts: at
        2048x2048 the first costs a few tenths of a second, which a camera on its own clock would
        otherwise spend with its buffer filling."""
        settings = self._settings()
        scope = self._scope
        cycle = len(scope.z_sequence) if scope.z_sequence is not None else 1
        cycle *= len(scope.channel_sequence or ()) or 1
        count = min(cycle, self._cache_size, frame_count if frame_count is not None else cycle)
        for index in range(count):
            self._prepared(*scope.state_for_frame(index), settings)

    def start(self) -> None:
        with self._lock:
            self._pool.limit_bytes = self._buffer_bytes()
            self._clock.begin(self.frame_interval_s(), self._capacity())

    def _buffer_bytes(self) -> int:
        """The sequence buffer's size in bytes."""
        return int(float(self.sequence_buffer_mb) * 1024**2)

    def _capacity(self) -> int:
        """Frames the sequence buffer holds."""
        return self._buffer_bytes() // self._frame_bytes()

    def stop(self) -> None:
        with self._lock:
            self._clock.settle(time.monotonic())  # frames that arrived stay in the buffer
            self._clock.capturing = False
            self._clock.ended = True

    def is_stopped(self) -> bool:
        """True once no more frames will arrive (stopped, or every armed frame has arrived);
        frames already in the buffer can still be popped."""
        with self._lock:
            clock = self._clock
            clock.settle(time.monotonic())
            return not clock.capturing or clock.exhausted()

    def frame_interval_s(self) -> float:
        """Seconds between frames: the exposure, or the frame-rate limit if slower."""
        return max(float(self.exposure) / 1000.0, 1.0 / float(self.frame_rate_limit))

    def _frame_bytes(self) -> int:
        settings = self._settings()
        height, width = settings.frame_shape
        return max(height * width, 1) * np.dtype(settings.dtype).itemsize

    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        index = self._next_frame(timeout)
        if index is None:
            return None, None
        settings = self._settings()
        x, y, z, channel = self._scope.state_for_frame(index)
        image = self._render(x, y, z, channel, index, settings)
        self._scope.illuminate(settings.exposure)
        metadata = {
            "Camera": self.name,
            "Exposure-ms": settings.exposure,
            "Binning": settings.binning,
            "BitDepth": settings.bit_depth,
            "PixelSizeUm": settings.pixel_size_um * settings.binning,
            "StageX-um": x,
            "StageY-um": y,
            "StageZ-um": z,
            "Channel": channel,
            "ElapsedTime-ms": (index + 1) * self._clock.interval * 1000.0,
            "FrameIndex": index,
            "ReceivedTime": datetime.now().isoformat(timespec="milliseconds"),
        }
        return image, metadata

    def _next_frame(self, timeout: float | None) -> int | None:
        """The index of the oldest frame in the buffer, waiting up to ``timeout`` for one; ``None``
        at once when none will come (stopped, or every armed frame arrived)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            with self._lock:
                clock = self._clock
                clock.settle(now)
                if clock.waiting:
                    return clock.waiting.popleft()
                if clock.ended or clock.exhausted():
                    return None
                ready_at = clock.next_arrival() if clock.capturing else now + 0.005  # not started
            if deadline is not None and now >= deadline:
                return None
            wait = ready_at - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if wait > _SHORTEST_SLEEP_S:
                time.sleep(wait)
            else:  # any sleep lasts at least the OS timer slack (~50 µs): spin this close
                until = now + max(wait, 0.0)
                while time.monotonic() < until:
                    pass

    def _settings(self) -> _Settings:
        return _Settings(
            float(self.exposure),
            int(self.binning),
            int(self.bit_depth),
            tuple(self.roi),
            float(self.pixel_size_um),
        )

    def _prepared(
        self, x: float, y: float, z: float, channel: str, settings: _Settings
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The clean image of what the camera sees there with ``settings``, ready for noise (made
        once, then kept among the last few)."""
        scope = self._scope
        key = (
            round(x / settings.pixel_size_um),
            round(y / settings.pixel_size_um),
            round(z, 2),
            channel,
            settings.exposure,
            settings.binning,
            settings.roi,
            settings.bit_depth,
            scope.light_on,
            scope.light_power * round(scope.staining(x, y) * scope.fluorescence, 3),
        )
        cached = self._cache.get(key)
        if cached is None:
            maximum = (1 << settings.bit_depth) - 1
            cached = self._cache[key] = _prepare(render_clean(key), settings.dtype, maximum)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return cached

    def _render(
        self, x: float, y: float, z: float, channel: str, index: int, settings: _Settings
    ) -> np.ndarray:
        bit_depth, dtype = settings.bit_depth, settings.dtype
        cached = self._prepared(x, y, z, channel, settings)
        pattern = index % _PATTERNS
        frame = self._pool.take(settings.frame_shape, dtype)
        _draw(
            frame,
            cached,
            self._noise[pattern],
            self._wrapped_noise[dtype][pattern],
            (1 << bit_depth) - 1,
        )
        return frame


def _draw(
    frame: np.ndarray,
    prepared: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    noise: np.ndarray,
    wrapped_noise: np.ndarray,
    maximum: int,
) -> None:
    """The clean image plus noise into ``frame``, clipped exactly at 0 and ``maximum``."""
    base, inner, edges = prepared
    h, w = frame.shape
    if inner is None:  # mostly near the limits (e.g. 8-bit background): clip every pixel
        np.copyto(frame, np.clip(base + noise[: h * w].reshape(h, w), 0, maximum), casting="unsafe")
        return
    np.add(inner, wrapped_noise[: h * w].reshape(h, w), out=frame)
    if edges.size:  # pixels within the noise's reach of 0 or the maximum: clipped exactly
        frame.flat[edges] = np.clip(base.flat[edges] + noise[edges], 0, maximum)


def _prepare(
    base: np.ndarray, dtype: Any, maximum: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A clean image ready for fast noisy frames: itself, a copy in the frame dtype kept out of the
    noise's reach of 0 and ``maximum`` (``None`` when most pixels are that near), and the flat
    indices of the pixels that near (their noisy values are clipped one by one)."""
    edges = np.flatnonzero((base < _NOISE_MAX) | (base > maximum - _NOISE_MAX))
    if edges.size > base.size // 8:
        return base, None, edges
    return base, np.clip(base, _NOISE_MAX, maximum - _NOISE_MAX).astype(dtype), edges


def _checked_roi(name: str, value: Any, sensor: tuple[int, int]) -> tuple[int, int, int, int]:
    """``value`` as an roi of the ``sensor`` (height, width); refused, naming the valid range,
    when it is not four whole numbers or does not fit."""
    height, width = sensor
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 4
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(
            f"{name}.roi must be four whole numbers of pixels (x, y, width, height), got {value!r}"
        )
    x, y, w, h = (int(v) for v in value)
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
        raise ValueError(
            f"{name}.roi {tuple(value)} does not fit the {width} x {height} pixel sensor: x and y "
            f"from 0, width from 1 to {width} - x, height from 1 to {height} - y (the whole sensor "
            f"is (0, 0, {width}, {height}))"
        )
    return x, y, w, h


def _check_choice(device: Device, prop: str, value: Any) -> None:
    allowed = device.get_allowed_property_values(prop)
    if allowed is not None and value not in allowed:
        raise ValueError(f"{device.name}.{prop} must be one of {allowed}, got {value!r}")

"""Simulated microscope: camera, z stage, xy stage, channel selector and light source.

The devices share one :class:`SimulatedMicroscope` state, so the camera renders a synthetic specimen
that follows the stage position (x/y pan, z focus through blobs at several depths), the active
channel, the light source and the exposure, with noise, at a real frame rate.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from ..device_types import Detector, DoubleAxisPositioner, TriggerableSingleAxisPositioner
from ..kernel.device import Device

CHANNELS = ("DAPI", "FITC", "TRITC", "Cy5")
_TEXTURE = 512  # the specimen repeats every this many pixels; larger sensors see it tiled
_NOISE_MAX = 64  # the noise (normal, sigma 12 counts) is clipped to +-this
_MAX_SENSOR_SIDE = 8192
_CACHE_PIXELS = 160 * 512 * 512  # clean images kept: 160 at 512 x 512, fewer for larger sensors
_SHORTEST_SLEEP_S = 2e-4
_LAYER_DEPTHS_UM = (-12.0, -4.0, 4.0, 12.0)
_BLUR_SIGMAS = (1.0, 4.0, 10.0)
#: Centre (x, y, µm) and radius of the specimen's one brightly stained region, 3x brighter at its
#: centre.
BRIGHT_REGION_UM = (1000.0, -700.0)
BRIGHT_REGION_RADIUS_UM = 500.0


class SimulatedMicroscope:
    """Shared state of the simulated devices (plain data, read by the camera when it renders)."""

    def __init__(self) -> None:
        self.x_um = 0.0
        self.y_um = 0.0
        self.z_um = 0.0
        self.channel = CHANNELS[0]
        self.light_on = True
        self.light_power = 1.0
        self.z_sequence: np.ndarray | None = None
        self.channel_sequence: list[str] | None = None
        self.bleaching_per_s = 0.0
        self.fluorescence = 1.0  # the fraction of the dyes not bleached yet

    @staticmethod
    def staining(x_um: float, y_um: float) -> float:
        """How brightly the specimen is stained around stage position (x, y): 1 everywhere but in
        one region (:data:`BRIGHT_REGION_UM`), up to 3 at its centre."""
        distance = math.hypot(x_um - BRIGHT_REGION_UM[0], y_um - BRIGHT_REGION_UM[1])
        return 1.0 + 2.0 * max(0.0, 1.0 - distance / BRIGHT_REGION_RADIUS_UM) ** 2

    def illuminate(self, exposure_ms: float) -> None:
        """Bleach the dyes by one exposure of the light (when ``bleaching_per_s`` is set)."""
        if self.bleaching_per_s and self.light_on:
            self.fluorescence *= math.exp(
                -(self.bleaching_per_s * self.light_power * exposure_ms / 1000.0)
            )

    def state_for_frame(self, frame_index: int) -> tuple[float, float, float, str]:
        """Stage and channel for the ``frame_index``-th frame of a capture (sequences advance per
        frame)."""
        z = self.z_um
        if self.z_sequence is not None and len(self.z_sequence):
            z = float(self.z_sequence[frame_index % len(self.z_sequence)])
        channel = self.channel
        if self.channel_sequence:
            channel = self.channel_sequence[frame_index % len(self.channel_sequence)]
        return self.x_um, self.y_um, z, channel


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    freq = np.fft.fftfreq(image.shape[0])
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(image) * kernel)).astype(np.float32)


def _periodic_crop(texture: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """The ``height`` x ``width`` window at ``(y, x)`` of a ``_TEXTURE``-periodic image padded to
    ``2 * _TEXTURE``.

    A view when the window fits the padding (any window up to ``_TEXTURE`` wide); else a copy that
    tiles the period, so any sensor size sees a seamless specimen.
    """
    if y + height <= texture.shape[0] and x + width <= texture.shape[1]:
        return texture[y : y + height, x : x + width]
    repeats = (-(-(y + height) // _TEXTURE), -(-(x + width) // _TEXTURE))
    return np.tile(texture[:_TEXTURE, :_TEXTURE], repeats)[y : y + height, x : x + width]


@functools.cache
def _specimen(channel: str) -> np.ndarray:
    """Per channel: an array (layers, blur levels, 2T, 2T) of periodic blob images, padded for
    wrap-free crops."""
    seed = sum(channel.encode())
    rng = np.random.default_rng(seed)
    density = {"DAPI": 60, "FITC": 140, "TRITC": 90, "Cy5": 40}.get(channel, 80)
    layers = []
    for _ in _LAYER_DEPTHS_UM:
        points = np.zeros((_TEXTURE, _TEXTURE), np.float32)
        ys, xs = rng.integers(0, _TEXTURE, (2, density))
        points[ys, xs] = rng.uniform(0.5, 1.0, density).astype(np.float32)
        levels = []
        for sigma in _BLUR_SIGMAS:
            blurred = _gaussian_blur(points, sigma * (2.5 if channel == "DAPI" else 1.5))
            blurred /= max(float(blurred.max()), 1e-6)
            levels.append(np.pad(blurred, ((0, _TEXTURE), (0, _TEXTURE)), mode="wrap"))
        layers.append(levels)
    return np.asarray(layers, dtype=np.float32)


class SimulatedCamera(Detector):
    """A camera that renders the simulated specimen.

    ``exposure`` is in ms; frames arrive every ``max(exposure, 1 / frame_rate_limit)`` seconds. The
    sensor is ``width`` x ``height`` pixels, each 1 to 8192 (e.g. 2048 x 2048 or 2304 x 2304 as on
    sCMOS cameras).
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
        self.roi = (0, 0, width, height)
        self._lock = threading.Lock()
        self._armed_count: int | None = 0
        self._capturing = False
        self._start_time = 0.0
        self._delivered = 0
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = (
            OrderedDict()
        )
        self._cache_size = max(8, _CACHE_PIXELS // (width * height))
        noise = np.clip(
            np.rint(np.random.default_rng(0).normal(0, 12, (4, height * width))),
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
        return {"exposure": (0.0, 10000.0), "frame_rate_limit": (1.0, 100000.0)}.get(
            property_name, (None, None)
        )

    def is_property_read_only(self, property_name: str) -> bool:
        return property_name == "pixel_size_um"

    def arm(self, frame_count: int | None = None) -> None:
        if frame_count is not None and (not isinstance(frame_count, int) or frame_count < 0):
            raise ValueError(
                f"{self.name}: frame_count must be a non-negative int or None, got {frame_count!r}"
            )
        _check_choice(self, "binning", self.binning)
        _check_choice(self, "bit_depth", self.bit_depth)
        x, y, w, h = self.roi
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > self._sensor[1] or y + h > self._sensor[0]:
            raise ValueError(
                f"{self.name}: roi {self.roi} does not fit the {self._sensor[1]}x{self._sensor[0]} "
                "sensor"
            )
        if w < self.binning or h < self.binning:
            raise ValueError(
                f"{self.name}: binning {self.binning} leaves no pixels of the {w}x{h} roi; "
                f"use a binning of at most {min(w, h)} or a larger roi"
            )
        with self._lock:
            self._armed_count = frame_count
            self._delivered = 0

    def start(self) -> None:
        with self._lock:
            self._capturing = True
            self._delivered = 0
            self._start_time = time.monotonic()

    def stop(self) -> None:
        with self._lock:
            self._capturing = False

    def is_stopped(self) -> bool:
        with self._lock:
            return not self._capturing or (
                self._armed_count is not None and self._delivered >= self._armed_count
            )

    def frame_interval_s(self) -> float:
        """Seconds between frames: the exposure, or the frame-rate limit if slower."""
        return max(float(self.exposure) / 1000.0, 1.0 / float(self.frame_rate_limit))

    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                index = self._delivered
                exhausted = self._armed_count is not None and index >= self._armed_count
                ready_at = self._start_time + (index + 1) * self.frame_interval_s()
                capturing = self._capturing and not exhausted
            now = time.monotonic()
            if capturing and now >= ready_at:
                break
            if deadline is not None and now >= deadline:
                return None, None
            if not capturing:
                wait = 0.005
            else:
                wait = ready_at - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if wait > _SHORTEST_SLEEP_S:
                time.sleep(wait)
            # any sleep lasts at least the OS timer slack (~50 µs): wait for a frame
            # this close by spinning
            else:
                until = now + max(wait, 0.0)
                while time.monotonic() < until:
                    pass
        with self._lock:
            self._delivered += 1
        settings = _Settings(
            float(self.exposure),
            int(self.binning),
            int(self.bit_depth),
            tuple(self.roi),
            float(self.pixel_size_um),
        )
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
            "ElapsedTime-ms": (time.monotonic() - self._start_time) * 1000.0,
            "FrameIndex": index,
            "ReceivedTime": datetime.now().isoformat(timespec="milliseconds"),
        }
        return image, metadata

    def _render(
        self, x: float, y: float, z: float, channel: str, index: int, settings: _Settings
    ) -> np.ndarray:
        binning, bit_depth = settings.binning, settings.bit_depth
        _rx, _ry, rw, rh = settings.roi
        h, w = rh // binning, rw // binning
        dtype = np.uint8 if bit_depth == 8 else np.uint16
        maximum = (1 << bit_depth) - 1
        scope = self._scope
        key = (
            round(x / settings.pixel_size_um),
            round(y / settings.pixel_size_um),
            round(z, 2),
            channel,
            settings.exposure,
            binning,
            settings.roi,
            bit_depth,
            scope.light_on,
            scope.light_power * round(scope.staining(x, y) * scope.fluorescence, 3),
        )
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = _prepare(self._render_clean(key), dtype, maximum)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        base, inner, edges = cached
        pattern = index % 4
        if inner is None:  # mostly near the limits (e.g. 8-bit background): clip every pixel
            frame = base + self._noise[pattern, : h * w].reshape(h, w)
            np.clip(frame, 0, maximum, out=frame)
            return frame.astype(dtype)
        frame = np.add(
            inner, self._wrapped_noise[dtype][pattern, : h * w].reshape(h, w), dtype=dtype
        )
        if edges.size:  # pixels within the noise's reach of 0 or the maximum: clipped exactly
            frame.flat[edges] = np.clip(base.flat[edges] + self._noise[pattern, edges], 0, maximum)
        return frame

    def _render_clean(self, key: tuple) -> np.ndarray:
        px, py, z, channel, exposure, binning, roi, bit_depth, light_on, power = key
        rx, ry, rw, rh = roi
        specimen = _specimen(channel)
        ox = (px + rx) % _TEXTURE
        oy = (py + ry) % _TEXTURE
        image = np.zeros((rh, rw), np.float32)
        for layer, depth in enumerate(_LAYER_DEPTHS_UM):
            defocus = abs(z - depth)
            weight = float(np.exp(-(defocus**2) / (2 * 15.0**2)))
            if weight < 0.05:
                continue
            level = 0 if defocus < 3 else 1 if defocus < 9 else 2
            image += weight * _periodic_crop(specimen[layer, level], oy, ox, rh, rw)
        # pixels left over when the roi is not a multiple of the binning are dropped
        if binning > 1:
            h, w = rh // binning, rw // binning
            image = (
                image[: h * binning, : w * binning].reshape(h, binning, w, binning).sum(axis=(1, 3))
            )
        maximum = (1 << int(bit_depth)) - 1
        signal = 0.6 * maximum * min(max(exposure, 0.5) / 50.0, 1.0) * (power if light_on else 0.0)
        return np.rint(100.0 * maximum / 65535 + signal * image).astype(np.int32)


class _Settings(NamedTuple):
    """The camera settings one frame is made with (read once per frame)."""

    exposure: float
    binning: int
    bit_depth: int
    roi: tuple[int, int, int, int]
    pixel_size_um: float


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


def _check_choice(device: Device, prop: str, value: Any) -> None:
    allowed = device.get_allowed_property_values(prop)
    if allowed is not None and value not in allowed:
        raise ValueError(f"{device.name}.{prop} must be one of {allowed}, got {value!r}")


class SimulatedZStage(TriggerableSingleAxisPositioner):
    """A focus drive (µm) that also steps through hardware-triggered position sequences."""

    def __init__(self, name: str = "Z", microscope: SimulatedMicroscope | None = None) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        return (-5000.0, 5000.0) if property_name == "position" else (None, None)

    @property
    def position(self) -> float:
        """The current z in µm."""
        return self._scope.z_um

    @position.setter
    def position(self, value: float) -> None:
        self.set_position(value)

    def set_position(self, position: float) -> None:
        low, high = self.get_property_limits("position")
        position = float(position)
        if not low <= position <= high:  # type: ignore[operator]
            raise ValueError(f"{self.name}: z {position} µm is outside [{low}, {high}]")
        self._scope.z_um = position

    def get_position(self) -> float:
        return self._scope.z_um

    def set_position_sequence(self, positions: np.ndarray) -> None:
        self._scope.z_sequence = np.asarray(positions, dtype=float)

    def get_triggerable_position_sequence_max_length(self) -> int:
        return 10000

    def stop_position_sequence(self) -> None:
        self._scope.z_sequence = None


class SimulatedXYStage(DoubleAxisPositioner):
    """An XY stage (µm)."""

    def __init__(self, name: str = "XY", microscope: SimulatedMicroscope | None = None) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()

    def set_position(self, x: float, y: float) -> None:
        self._scope.x_um, self._scope.y_um = float(x), float(y)

    def get_position(self) -> tuple[float, float]:
        return self._scope.x_um, self._scope.y_um


class SimulatedChannelSelector(Device):
    """A filter/channel selector with named positions; triggerable sequences for fast channel
    switching."""

    def __init__(
        self,
        name: str = "Channel",
        microscope: SimulatedMicroscope | None = None,
        channels: tuple[str, ...] = CHANNELS,
    ) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()
        self._channels = tuple(channels)
        self._scope.channel = self._channels[0]

    @property
    def channel(self) -> str:
        """The active channel."""
        return self._scope.channel

    @channel.setter
    def channel(self, value: str) -> None:
        if value not in self._channels:
            raise ValueError(
                f"{self.name}.channel must be one of {list(self._channels)}, got {value!r}"
            )
        self._scope.channel = value

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        return list(self._channels) if property_name == "channel" else None

    def is_property_hardware_triggerable(self, property_name: str) -> bool:
        return property_name == "channel"

    def get_triggerable_sequence_max_length(self, property_name: str) -> int:
        return 256

    def load_triggerable_sequence(self, property_name: str, event_sequence: Any) -> None:
        values = list(event_sequence)
        bad = [v for v in values if v not in self._channels]
        if bad:
            raise ValueError(f"{self.name}: unknown channels {bad}; allowed {list(self._channels)}")
        self._pending_sequence = values

    def start_triggerable_sequence(self, property_name: str) -> None:
        self._scope.channel_sequence = list(getattr(self, "_pending_sequence", []))

    def stop_triggerable_sequence(self, property_name: str) -> None:
        self._scope.channel_sequence = None


class SimulatedLightSource(Device):
    """A light source with an on/off switch and relative power (0-1)."""

    def __init__(self, name: str = "Light", microscope: SimulatedMicroscope | None = None) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()

    @property
    def enabled(self) -> bool:
        """Whether the light is on."""
        return self._scope.light_on

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._scope.light_on = bool(value)

    @property
    def power(self) -> float:
        """Relative power, 0 to 1."""
        return self._scope.light_power

    @power.setter
    def power(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.name}.power must be within [0, 1], got {value}")
        self._scope.light_power = value

    @property
    def bleaching(self) -> float:
        """How fast the dyes bleach: the fraction lost per second of full-power light (0: never).
        Setting it starts from a fresh, unbleached specimen."""
        return self._scope.bleaching_per_s

    @bleaching.setter
    def bleaching(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 100.0:
            raise ValueError(
                f"{self.name}.bleaching must be within [0, 100] per second, got {value}"
            )
        self._scope.bleaching_per_s = value
        self._scope.fluorescence = 1.0

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        return {"power": (0.0, 1.0), "bleaching": (0.0, 100.0)}.get(property_name, (None, None))


def create_simulated_devices(prefix: str = "") -> dict[str, Device]:
    """Create and register one simulated microscope: camera, z stage, xy stage, channel selector,
    light."""
    scope = SimulatedMicroscope()
    devices: list[Device] = [
        SimulatedCamera(f"{prefix}Camera", scope),
        SimulatedZStage(f"{prefix}Z", scope),
        SimulatedXYStage(f"{prefix}XY", scope),
        SimulatedChannelSelector(f"{prefix}Channel", scope),
        SimulatedLightSource(f"{prefix}Light", scope),
    ]
    return {device.name: device for device in devices}

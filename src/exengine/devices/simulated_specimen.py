"""The simulated specimen and the microscope state the simulated devices share: blobs at several
depths in four stained channels, one brightly stained region, dyes that bleach under the light."""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

__all__ = [
    "BRIGHT_REGION_RADIUS_UM",
    "BRIGHT_REGION_UM",
    "CHANNELS",
    "SimulatedMicroscope",
    "render_clean",
]

CHANNELS = ("DAPI", "FITC", "TRITC", "Cy5")
_TEXTURE = 512  # the specimen repeats every this many pixels; larger sensors see it tiled
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


def _gaussian_blurs(image: np.ndarray, sigmas: list[float]) -> list[np.ndarray]:
    """``image`` (square, periodic) blurred by a Gaussian of each of ``sigmas`` (pixels): one
    forward transform for all."""
    spectrum = np.fft.rfft2(image)
    fy = np.fft.fftfreq(image.shape[0])[:, None] ** 2
    fx = np.fft.rfftfreq(image.shape[1])[None, :] ** 2
    return [
        np.fft.irfft2(spectrum * np.exp(-2 * (np.pi * sigma) ** 2 * (fy + fx)), image.shape).astype(
            np.float32
        )
        for sigma in sigmas
    ]


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
        widen = 2.5 if channel == "DAPI" else 1.5
        levels = []
        for blurred in _gaussian_blurs(points, [sigma * widen for sigma in _BLUR_SIGMAS]):
            blurred /= max(float(blurred.max()), 1e-6)
            levels.append(np.pad(blurred, ((0, _TEXTURE), (0, _TEXTURE)), mode="wrap"))
        layers.append(levels)
    return np.asarray(layers, dtype=np.float32)


_preparing: list[threading.Thread] = []


def prepare_specimens() -> None:
    """Make the dyes' specimens (:data:`CHANNELS`) on a background thread, once per process, so
    that the first frame of each channel does not wait a few tenths of a second for its specimen
    (a time-lapse's first interval would be late)."""
    if not _preparing:
        thread = threading.Thread(
            target=lambda: [_specimen(dye) for dye in CHANNELS], name="specimens", daemon=True
        )
        _preparing.append(thread)
        thread.start()


def render_clean(key: tuple) -> np.ndarray:
    """The noise-free image (int32 counts) a camera sees with the settings of ``key``: stage
    position (pixels), z, channel, exposure, binning, roi, bit depth, light and brightness."""
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
        image = image[: h * binning, : w * binning].reshape(h, binning, w, binning).sum(axis=(1, 3))
    maximum = (1 << int(bit_depth)) - 1
    signal = 0.6 * maximum * min(max(exposure, 0.5) / 50.0, 1.0) * (power if light_on else 0.0)
    return np.rint(100.0 * maximum / 65535 + signal * image).astype(np.int32)

"""An example processor plugin for napari-exengine: Gaussian denoising of each frame."""

from __future__ import annotations

from typing import Any

import numpy as np


def _kernel(sigma: float) -> np.ndarray:
    radius = max(int(3 * sigma), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(x**2) / (2 * sigma**2))
    return weights / weights.sum()


def gaussian_denoise(sigma: float = 1.0):
    """A process function blurring each frame with a Gaussian of ``sigma`` pixels (same dtype
    out)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    kernel = _kernel(sigma)

    def denoise(coords: Any, data: np.ndarray, metadata: Any):
        padded = np.pad(data.astype(np.float64), len(kernel) // 2, mode="reflect")
        rows = np.apply_along_axis(np.convolve, 1, padded, kernel, mode="valid")
        smooth = np.apply_along_axis(np.convolve, 0, rows, kernel, mode="valid")
        info = np.iinfo(data.dtype) if np.issubdtype(data.dtype, np.integer) else None
        if info is not None:
            smooth = np.clip(np.rint(smooth), info.min, info.max)
        return (
            coords,
            smooth.astype(data.dtype),
            dict(metadata or {}, Denoise=f"gaussian sigma={sigma}"),
        )

    return denoise

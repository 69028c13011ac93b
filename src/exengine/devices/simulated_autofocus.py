"""A simulated hardware autofocus: it finds the sharpest plane of the simulated specimen near the
focus drive's position and moves the drive there (plus its offset)."""

from __future__ import annotations

import numpy as np

from ..device_types import Autofocus, SingleAxisPositioner
from .simulated_specimen import SimulatedMicroscope, render_clean

__all__ = ["SimulatedAutofocus"]

_WINDOW_PX = 64  # the patch of the field of view whose sharpness the autofocus measures
_PIXEL_UM = 0.65


class SimulatedAutofocus(Autofocus):
    """Finds the plane within ``capture_range_um`` of the focus drive's position where the specimen
    (in the active channel, at the current x/y) is sharpest: a coarse search in 1 µm steps, then
    0.25 µm steps around the best; moves ``focus`` there plus ``offset``."""

    def __init__(
        self,
        name: str = "Autofocus",
        microscope: SimulatedMicroscope | None = None,
        focus: SingleAxisPositioner | None = None,
        capture_range_um: float = 15.0,
    ) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()
        self._focus = focus
        self.capture_range_um = float(capture_range_um)
        self._offset = 0.0

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        limits = {"offset": (-100.0, 100.0), "capture_range_um": (0.0, 100.0)}
        return limits.get(property_name, (None, None))

    @property
    def offset(self) -> float:
        """µm added to the best focus found."""
        return self._offset

    @offset.setter
    def offset(self, value: float) -> None:
        value = float(value)
        low, high = self.get_property_limits("offset")
        if not low <= value <= high:  # type: ignore[operator]
            raise ValueError(f"{self.name}.offset must be within [{low}, {high}] µm, got {value}")
        self._offset = value

    def best_focus(self) -> float:
        """The sharpest plane near the focus drive's position (µm), without moving."""
        start = self._focus.get_position() if self._focus is not None else self._scope.z_um
        reach = self.capture_range_um
        coarse = np.arange(start - reach, start + reach + 0.5, 1.0)
        best = self._sharpest(coarse)
        return self._sharpest(np.arange(best - 1.0, best + 1.125, 0.25))

    def run(self) -> float:
        target = round(self.best_focus() + self._offset, 6)
        if self._focus is not None:
            self._focus.set_position(target)
        else:
            self._scope.z_um = target
        return target

    def _sharpest(self, planes: np.ndarray) -> float:
        scope = self._scope
        x_px, y_px = round(scope.x_um / _PIXEL_UM), round(scope.y_um / _PIXEL_UM)
        scores = []
        for z in planes:
            key = (x_px, y_px, float(z), scope.channel, 50.0, 1, (0, 0, _WINDOW_PX, _WINDOW_PX))
            image = render_clean((*key, 16, True, 1.0)).astype(np.float64)
            scores.append(image.var() / max(image.mean(), 1.0))
        if max(scores) - min(scores) < 1e-9:
            raise RuntimeError(f"{self.name}: no focus found within ±{self.capture_range_um} µm")
        return float(planes[int(np.argmax(scores))])

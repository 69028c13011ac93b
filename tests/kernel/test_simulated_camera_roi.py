"""The simulated camera refuses an roi that does not fit its sensor when it is set."""

from __future__ import annotations

import pytest

from exengine.devices.simulated import create_simulated_devices


@pytest.mark.parametrize(
    "roi",
    [(0, 0, 1024, 512), (400, 0, 200, 100), (0, -1, 10, 10), (0, 0, 0, 10), (0, 0, 10.5, 10)],
)
def test_an_roi_outside_the_sensor_is_refused_when_set_naming_the_valid_range(roi):
    camera = create_simulated_devices()["Camera"]
    before = camera.roi
    with pytest.raises(ValueError) as refused:
        camera.roi = roi
    message = str(refused.value)
    assert str(roi) in message or repr(roi) in message
    if not isinstance(roi[2], float):
        assert "512 x 512 pixel sensor" in message and "(0, 0, 512, 512)" in message
    assert camera.roi == before  # unchanged
    camera.roi = (8, 4, 80, 48)  # one that fits is taken
    assert camera.roi == (8, 4, 80, 48)
    camera.arm(1)

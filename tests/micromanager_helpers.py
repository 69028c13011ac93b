"""Micro-Manager's own C++ demo adapters (mm-test-adapters) in tests: a configuration with a
Multi Camera, and telling its cameras' frames apart."""

from __future__ import annotations

import numpy as np

#: Micro-Manager's own C++ demo adapters (mm-test-adapters): two DemoCameras behind a Multi Camera
#: and a focus drive. Cam2 shows noise and Cam1 waves, so a frame tells which camera took it.
MULTI_CAMERA_CONFIG = """\
Device,Cam1,DemoCamera,DCam
Device,Cam2,DemoCamera,DCam
Device,Multi,Utilities,Multi Camera
Device,Z,DemoCamera,DStage
Property,Core,Initialize,1
Property,Cam1,OnCameraCCDXSize,96
Property,Cam1,OnCameraCCDYSize,64
Property,Cam2,OnCameraCCDXSize,96
Property,Cam2,OnCameraCCDYSize,64
Property,Cam2,Mode,Noise
Property,Multi,Physical Camera 1,Cam1
Property,Multi,Physical Camera 2,Cam2
Property,Core,Camera,Multi
Property,Core,Focus,Z
"""


def camera_of(frame: np.ndarray) -> str:
    """Which camera of :data:`MULTI_CAMERA_CONFIG` took ``frame``: Cam2's noise changes from pixel
    to pixel far more than Cam1's waves (at exposures of a few ms: from about 20 ms Cam2's noise
    saturates)."""
    return "Cam2" if np.abs(np.diff(frame.astype(float), axis=1)).mean() > 5 else "Cam1"

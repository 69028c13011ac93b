"""Shared fixtures: a fresh engine per test, the shared NDTiff test data, display checks for GUI
tests."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from npe2 import PluginManager, PluginManifest

from exengine import ExecutionEngine
from exengine.devices.simulated import create_simulated_devices
from micromanager_helpers import MULTI_CAMERA_CONFIG

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "ndtiff"


@pytest.fixture(autouse=True)
def qt_garbage_collected_between_tests(request):
    """After a GUI test, once its viewers are closed, collect its garbage: panels a test made
    without docking them belong to Python, and a collection that deleted them in the middle of a
    later test's Qt events crashed the run (a deleted QListView receiving an event)."""
    yield
    if {"gui_viewer", "qtbot", "make_napari_viewer"} & set(request.fixturenames):
        gc.collect()


@pytest.fixture(autouse=True)
def engine():
    """A live engine for the test; shut down (draining its threads) afterwards."""
    engine = ExecutionEngine()
    yield engine
    ExecutionEngine.get_instance().shutdown()


@pytest.fixture(autouse=True)
def temporary_files_in_tmp_path(tmp_path, monkeypatch):
    """Code that makes temporary folders (the README's and docs' examples, default data folders)
    makes them in the test's ``tmp_path``, which pytest cleans up, instead of leaving them in /tmp
    or home."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("EXENGINE_DATA_DIR", str(tmp_path / "exengine-data"))


@pytest.fixture
def sigkill_after_lines():
    """``run(code, *args, lines=N)``: a Python subprocess running ``code`` is SIGKILLed once it has
    printed more than ``N`` lines (each printed after something was reported done); returns the
    lines."""

    def run(code: str, *args: str, lines: int) -> list[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True
        )
        printed: list[str] = []
        enough = threading.Event()

        def pump() -> None:
            for line in process.stdout:
                printed.append(line.strip())
                if len(printed) > lines:
                    enough.set()
                    return

        threading.Thread(target=pump, daemon=True).start()
        try:
            assert enough.wait(60), f"the subprocess printed only {printed}"
        finally:
            process.kill()  # SIGKILL
            process.wait(30)
        return printed

    return run


MICROMANAGER_CONFIG = """\
Device,Camera,exengine.backends.micromanager_demo,DemoCamera
Device,Focus,exengine.backends.micromanager_demo,DemoFocus
Device,XY,exengine.backends.micromanager_demo,DemoXYStage
Device,Filter,exengine.backends.micromanager_demo,DemoFilterWheel
Property,Core,Initialize,1
Property,Core,Camera,Camera
Property,Core,Focus,Focus
Property,Core,XYStage,XY
ConfigGroup,Channel,DAPI,Filter,Label,DAPI
ConfigGroup,Channel,FITC,Filter,Label,FITC
"""


@pytest.fixture
def micromanager_config(tmp_path) -> Path:
    """A Micro-Manager configuration file of pure-Python demo devices (camera, focus, XY stage, a
    filter wheel behind the config group ``Channel``)."""
    path = tmp_path / "demo.cfg"
    path.write_text(MICROMANAGER_CONFIG)
    return path


@pytest.fixture
def multi_camera_config(tmp_path) -> Path:
    """A Micro-Manager configuration file of C++ demo devices with a Multi Camera of two cameras
    (``micromanager_helpers.MULTI_CAMERA_CONFIG``)."""
    path = tmp_path / "multi_camera.cfg"
    path.write_text(MULTI_CAMERA_CONFIG)
    return path


@pytest.fixture
def testdata() -> Path:
    """The folder of real NDTiff datasets (``../shared/testdata/ndtiff``)."""
    if not TESTDATA.is_dir():
        if IN_CI:
            pytest.fail(f"Test data folder {TESTDATA} is missing in CI")
        pytest.skip(
            f"Test data folder {TESTDATA} not found (run from the project checkout beside shared/)"
        )
    return TESTDATA


@pytest.fixture
def scope():
    """The simulated microscope, with a zero-exposure camera limited to 2,000 frames/s."""
    devices = create_simulated_devices()
    devices["Camera"].exposure = 0.0
    devices["Camera"].frame_rate_limit = 2000.0
    return devices


@pytest.fixture
def gui_viewer(make_napari_viewer, request):
    """A napari viewer; GUI tests fail in CI (and skip elsewhere) when no OpenGL display is
    available."""
    try:
        return make_napari_viewer(show=getattr(request, "param", False))
    except Exception as e:
        if IN_CI:
            raise
        pytest.skip(f"No usable display for napari: {e}")


BROKEN = """
name: broken-contributions
contributions:
  commands:
    - id: broken-contributions.missing
      title: Missing module
      python_name: no_such_module_anywhere:factory
    - id: broken-contributions.raises
      title: Raising factory
      python_name: exengine.processors:frame_averaging
    - id: broken-contributions.wrong
      title: Wrong type
      python_name: builtins:dict
  menus:
    napari-exengine/processors:
      - command: broken-contributions.missing
      - command: broken-contributions.raises
    napari-exengine/storage:
      - command: broken-contributions.wrong
"""


@pytest.fixture
def manager_with_broken_plugin(tmp_path):
    """The installed plugins plus a broken one, in a private npe2 plugin manager."""
    path = tmp_path / "napari.yaml"
    path.write_text(BROKEN)
    manager = PluginManager()
    manager.discover()
    manager.register(PluginManifest.from_file(path))
    return manager


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(size)``: a tmpfs of ``size`` (``"2m"``), for a disk that really fills up; needs
    root and mount rights, else the test is skipped. Unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                check=True,
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot mount a tmpfs here ({getattr(e, 'stderr', b'') or e!r})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=30)

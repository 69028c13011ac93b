"""Packaging, plugin discovery, import isolation and lint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_engine_never_imports_qt_or_napari():
    code = (
        "import sys, exengine, exengine.base_classes, exengine.data, exengine.events, "
        "exengine.notifications, exengine.device_types, exengine.storage.ndtiff, "
        "exengine.acquisition, exengine.devices.simulated\nbad = [m for m in sys.modules if "
        "m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', "
        "'magicgui', 'npe2', 'vispy')]\nprint(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_validates_with_imports():
    npe2 = shutil.which("npe2")
    assert npe2, "npe2 command not installed"
    result = subprocess.run(
        [npe2, "validate", "napari-exengine", "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_npe2_discovers_manifest_through_entry_point():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover(include_npe1=False)
    manifest = pm.get_manifest("napari-exengine")
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert {"Devices", "Acquisition"} <= widgets


def test_manifest_is_shipped_inside_the_package():
    import napari_exengine

    shipped = Path(napari_exengine.__file__).parent / "napari.yaml"
    assert shipped.read_text() == (ROOT / "napari.yaml").read_text()


def test_ruff_is_clean():
    """Lint (with a 100-column limit) and formatting, as ``pyproject.toml`` configures them."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (it is in the test extra)")
    paths = ["src", "tests", "benchmarks", "docs", "examples"]
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [ruff, *command, *paths], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_built_wheel_ships_the_manifest_and_entry_point(tmp_path):
    import zipfile

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_exengine-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert (
            archive.read("napari_exengine/napari.yaml").decode()
            == (ROOT / "napari.yaml").read_text()
        )
        entry_points = archive.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
    assert "napari-exengine = napari_exengine:napari.yaml" in entry_points
    assert any(n.startswith("exengine/kernel/") for n in names)

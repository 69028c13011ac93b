"""The built distributions: a wheel and an sdist pass ``twine check``, and the wheel installs into a
fresh virtual environment (not this editable checkout) where the commands run and npe2 finds every
contribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

import exengine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Printed by the fresh environment's Python: what npe2 discovered there.
DISCOVER = textwrap.dedent("""
    import json
    import exengine, napari_exengine
    from npe2 import PluginManager
    manager = PluginManager()
    manager.discover()
    manifest = manager.get_manifest("napari-exengine")
    c = manifest.contributions
    print(json.dumps({
        "files": [exengine.__file__, napari_exengine.__file__],
        "version": manifest.package_metadata.version,
        "commands": sorted([x.id, x.python_name] for x in c.commands),
        "widgets": sorted([x.command, x.display_name] for x in c.widgets),
        "readers": sorted(
            [x.command, x.filename_patterns, x.accepts_directories] for x in c.readers
        ),
        "writers": sorted([x.command, x.layer_types, x.filename_extensions] for x in c.writers),
        "sample_data": sorted([x.key, x.command] for x in c.sample_data),
        "menus": {k: [item.command for item in v] for k, v in c.menus.items()},
    }))
""")


def run(*args, cwd, timeout=300):
    """Run a command outside the checkout; fail with its output when it fails."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist, and the wheel built from it (``python -m build``'s default), in a temporary
    folder."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def manifest():
    """The repository's ``napari.yaml`` as a dict."""
    return yaml.safe_load((ROOT / "napari.yaml").read_text())


def test_twine_check_passes(dist):
    run(sys.executable, "-m", "twine", "check", "--strict", *dist, cwd=dist[0].parent)


def test_wheel_holds_manifest_license_and_metadata(dist, manifest):
    wheel, _ = dist
    version = exengine.__version__
    assert wheel.name == f"napari_exengine-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"napari_exengine-{version}.dist-info"
        assert yaml.safe_load(z.read("napari_exengine/napari.yaml")) == manifest
        assert b"BSD 3-Clause" in z.read(f"{info}/licenses/LICENSE")
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = Parser().parsestr(z.read(f"{info}/METADATA").decode())
    assert {
        "exengine/__init__.py",
        "napari_exengine/cli.py",
        "napari_exengine/acquisition_panel.py",
    } <= names
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)
    assert "napari-exengine = napari_exengine:napari.yaml" in entry_points
    assert "exengine = napari_exengine.exengine_script:console" in entry_points
    assert metadata["Version"] == version and metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier")
    assert {
        "Framework :: napari",
        "License :: OSI Approved :: BSD License",
        "Programming Language :: Python :: 3.11",
    } <= set(classifiers)
    tested = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert tested in classifiers, (
        "python_requires and the classifiers match the Python the tests run on"
    )
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert {"Source Code", "Bug Tracker", "Documentation"} <= set(urls)


def test_sdist_holds_license_readme_and_manifest(dist, manifest):
    _, sdist = dist
    prefix = sdist.name[: -len(".tar.gz")]
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        packaged = tar.extractfile(f"{prefix}/src/napari_exengine/napari.yaml")
        assert packaged is not None, "napari.yaml is a file in the sdist, not a dangling symlink"
        assert yaml.safe_load(packaged.read()) == manifest
    assert {
        f"{prefix}/LICENSE",
        f"{prefix}/README.md",
        f"{prefix}/setup.cfg",
        f"{prefix}/pyproject.toml",
    } <= names


def test_wheel_in_fresh_venv_runs_commands_and_npe2_finds_every_contribution(
    dist, manifest, tmp_path
):
    wheel, _ = dist
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python, scripts = venv / "bin" / "python", venv / "bin"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # the wheel with its own requirements only: the commands need neither napari nor Qt
    run(*pip, wheel, cwd=tmp_path)
    version = exengine.__version__
    assert (
        run(scripts / "exengine", "--version", cwd=tmp_path).stdout.strip() == f"exengine {version}"
    )
    assert "acquire" in run(scripts / "exengine", "--help", cwd=tmp_path).stdout
    assert "--time" in run(scripts / "exengine", "acquire", "--help", cwd=tmp_path).stdout
    assert (
        run(scripts / "napari-exengine", "--version", cwd=tmp_path).stdout.strip()
        == f"napari-exengine {version}"
    )
    assert (
        "usage: napari-exengine" in run(scripts / "napari-exengine", "--help", cwd=tmp_path).stdout
    )

    run(*pip, "npe2", cwd=tmp_path)
    assert "valid" in run(scripts / "npe2", "validate", "napari-exengine", cwd=tmp_path).stdout
    found = json.loads(run(python, "-c", DISCOVER, cwd=tmp_path).stdout)
    assert all(Path(f).is_relative_to(venv) for f in found["files"]), found["files"]
    assert found["version"] == version
    c = manifest["contributions"]
    assert found["commands"] == sorted([x["id"], x["python_name"]] for x in c["commands"])
    assert found["widgets"] == sorted([x["command"], x["display_name"]] for x in c["widgets"])
    assert found["readers"] == sorted(
        [x["command"], x["filename_patterns"], x["accepts_directories"]] for x in c["readers"]
    )
    assert found["writers"] == sorted(
        [x["command"], x["layer_types"], x["filename_extensions"]] for x in c["writers"]
    )
    assert found["sample_data"] == sorted([x["key"], x["command"]] for x in c["sample_data"])
    assert found["menus"] == {k: [item["command"] for item in v] for k, v in c["menus"].items()}

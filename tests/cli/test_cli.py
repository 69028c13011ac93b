"""The ``exengine`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import ndstorage
import pytest
import yaml

from exengine.storage.ndtiff_reader import NDTiffReader
from micromanager_helpers import camera_of

EXENGINE = [sys.executable, "-c", "from napari_exengine.exengine_script import console; console()"]


def run(*args, cwd=None, timeout=120):
    return subprocess.run(
        [*EXENGINE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_help_is_complete():
    result = run("acquire", "--help")
    assert result.returncode == 0
    for option in (
        "--time",
        "--interval",
        "--z",
        "--channels",
        "--exposures",
        "--positions",
        "--order",
        "--file",
        "--backend",
        "--storage",
        "--processor",
        "--out",
        "--name",
        "Ctrl-C",
    ):
        assert option in result.stdout
    assert {"acquire", "info", "list"} <= set(
        run("--help").stdout.replace(",", " ").replace("{", " ").replace("}", " ").split()
    )


def test_acquire_tcz_writes_ndtiff_and_info_summarises(tmp_path):
    result = run(
        "acquire",
        "--time",
        "2",
        "--z",
        "0:4:2",
        "--channels",
        "DAPI,FITC",
        "--exposure",
        "0",
        "--positions",
        "0,0;50,50",
        "--labels",
        "A,B",
        "--out",
        str(tmp_path),
        "--name",
        "cli",
    )
    assert result.returncode == 0, result.stderr
    assert "Done: 24 of 24 frames stored in" in result.stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("running: ")]
    assert 1 <= len(progress) <= 11, "non-terminal output prints a line per tenth of the plan"
    path = tmp_path / "cli_1"
    reader = NDTiffReader(path)
    assert reader.axes == {
        "time": [0, 1],
        "position": ["A", "B"],
        "channel": ["DAPI", "FITC"],
        "z": [0, 1, 2],
    }
    # reopened at physical scale
    assert reader.z_step_um() == 2.0 and reader.pixel_size_um() == 0.65
    info = run("info", str(path))
    assert info.returncode == 0
    assert (
        "Frames: 24" in info.stdout
        and "512 x 512 uint16" in info.stdout
        and "position: 2 (A, B)" in info.stdout
    )
    assert "First/last timestamps:" in info.stdout and "Size on disk" in info.stdout
    assert "Pixel size: 0.65 µm; z step: 2 µm" in info.stdout


def test_acquire_with_contributed_storage_and_processor(tmp_path):
    result = run(
        "acquire",
        "--time",
        "2",
        "--exposure",
        "0",
        "--storage",
        "exengine-npy-storage.npy_folder",
        "--processor",
        "exengine-denoise.gaussian:sigma=2",
        "--processor",
        "napari-exengine.processor.background_subtraction:level=10",
        "--out",
        str(tmp_path),
        "--name",
        "npy",
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "npy" / "index.jsonl").read_text().splitlines()
    metadata = json.loads(lines[0])["metadata"]
    assert metadata["Denoise"] == "gaussian sigma=2" and metadata["Background"] == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--z", "1:2"], "START:STOP:STEP"),
        (["--time", "2", "--interval", "-1"], "The time interval must be 0 s or more, got -1 s"),
        (["--storage", "nope"], "No storage named 'nope'"),
        (["--mm-config", "x.cfg"], "needs the micromanager backend"),
        (["--backend", "micromanager", "--mm-config", "/nonexistent.cfg"], "no such file"),
        (["--channels", "DAPI", "--exposures", "1,2"], "2 exposures for 1 channel"),
        (["--name", "../../escaped"], "plain folder name"),
        (["--name", "../x", "--storage", "exengine-npy-storage.npy_folder"], "plain folder name"),
        (["--name", "x" * 300], "use at most 120"),
        (["--name", "run "], "ends with a space"),
        (["--plan", "napari-exengine.plan.grid_scan", "rows=2", "rows=3"], "rows is given twice"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, message):
    out = tmp_path / "out"
    out.mkdir()
    result = run("acquire", "--out", str(out), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any(tmp_path.rglob("*escaped*")) and not any(out.iterdir())  # nothing created


@pytest.mark.parametrize(
    "text, message",
    [
        ("storage: 7", "storage must be a storage id (see 'exengine list'), got 7"),
        ("out: 5", "out must be a folder or a store URL, got 5"),
        ("out: ''", "out must be a folder or a store URL, got ''"),
        ("name: 0", "name must be text, got 0"),
        ("processing: [1]", "processing must be 'local', 'cluster:N'"),
        ("processor: 5", "processor takes 'ID:key=value,...', a mapping"),
        ("processor: [{id: napari-exengine.processor.frame_averaging, params: 5}]", "got 5"),
        ("until_stopped: 'no'", "until_stopped must be true or false, got 'no'"),
        ("plan_settings: 5", "plan settings are key=value words or a mapping, got 5"),
    ],
)
def test_wrongly_typed_file_values_exit_2_naming_the_value(tmp_path, text, message):
    settings = tmp_path / "acq.yaml"
    settings.write_text(text + "\n")
    result = run("acquire", "--file", str(settings), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acq.yaml"]  # nothing created


def test_a_yaml_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "channels: *a8"]) + "\n")  # 10**9 values in 0.5 KB
    result = run("acquire", "--file", str(bomb), "--out", str(tmp_path), timeout=30)
    assert result.returncode == 2
    assert "more than 100,000 values once its aliases are expanded" in result.stderr
    assert len(result.stderr) < 600 and len(result.stderr.strip().splitlines()) == 1
    big = tmp_path / "big.yaml"
    big.write_text("labels: [" + "x, " * 600_000 + "x]\n")
    result = run("acquire", "--file", str(big), "--out", str(tmp_path), timeout=30)
    assert result.returncode == 2 and "larger than 1 MB" in result.stderr, result.stderr


MIP = "napari-exengine.processor.max_intensity_projection"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "s3://bucket/runs"], "The NDTiff storage writes to a local folder, and "),
        (
            ["--out", "s3://bucket/runs", "--storage", "exengine-npy-storage.npy_folder"],
            "choose the OME-Zarr storage, or give a folder",
        ),
        (
            [
                "--out",
                "s3://AKIAKEY:TOPSECRET@bucket/runs",
                "--storage",
                "napari-exengine.storage.omezarr",
            ],
            "The store URL 's3://***@bucket/runs' carries credentials",
        ),
        (
            ["--processing", "tcp://127.0.0.1:1", "--processor", MIP, "--z", "0:2:1"],
            "Cannot reach the Dask scheduler at tcp://127.0.0.1:1 (Connection refused",
        ),
        (
            ["--processing", "cluster:100000", "--processor", MIP, "--z", "0:2:1"],
            "A local cluster needs a whole number of workers from 1 to",
        ),
    ],
)
def test_destinations_and_clusters_are_checked_before_anything_is_created(tmp_path, args, message):
    """A store URL for a storage that writes folders, credentials in a store URL (never echoed),
    an unreachable scheduler and an absurd local cluster: exit 2 in a second, nothing created."""
    started = time.monotonic()
    result = run("acquire", "--time", "2", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "TOPSECRET" not in result.stderr + result.stdout
    assert time.monotonic() - started < 20
    assert not any(tmp_path.iterdir())  # no dataset, no folder named 's3:'
    if "credentials" in message:
        info = run("info", "s3://AKIAKEY:TOPSECRET@bucket/runs_1.ome.zarr", cwd=tmp_path)
        assert info.returncode == 2 and "s3://***@bucket" in info.stderr
        assert "TOPSECRET" not in info.stderr


def test_acquisition_file_yaml_and_useq(tmp_path):
    settings = tmp_path / "acq.yaml"
    settings.write_text(
        yaml.safe_dump({"time": 2, "channels": ["DAPI"], "exposure": 0, "name": "fromfile"})
    )
    result = run("acquire", "--file", str(settings), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(NDTiffReader(tmp_path / "fromfile_1").entries) == 2

    mda = tmp_path / "mda.json"
    mda.write_text(
        json.dumps(
            {
                "time_plan": {"interval": 0, "loops": 2},
                "z_plan": {"range": 4, "step": 2},
                "channels": [
                    {"config": "DAPI", "exposure": 0.1},
                    {"config": "FITC", "exposure": 0.1},
                ],
                "axis_order": "tpcz",
            }
        )
    )
    result = run("acquire", "--file", str(mda), "--out", str(tmp_path), "--name", "useq")
    assert result.returncode == 0, result.stderr
    reader = NDTiffReader(tmp_path / "useq_1")
    assert reader.axes == {"time": [0, 1], "channel": ["DAPI", "FITC"], "z": [0, 1, 2]}
    assert reader.read_metadata({"time": 0, "channel": "FITC", "z": 0})["StageZ-um"] == -2.0


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_cleanly_and_keeps_a_readable_dataset(tmp_path, presses):
    process = subprocess.Popen(
        [
            *EXENGINE,
            "acquire",
            "--time",
            "2000",
            "--exposure",
            "20",
            "--out",
            str(tmp_path),
            "--name",
            "interrupted",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    path = tmp_path / "interrupted_1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (path / "NDTiff.index").exists() and os.path.getsize(path / "NDTiff.index") > 2000:
            break
        time.sleep(0.05)
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    (stored,) = re.findall(r"(?:Stopped|Aborted): (\d+) of 2,000 frames stored in ", out)
    stored = int(stored)
    dataset = ndstorage.Dataset(str(path))
    assert 10 <= stored < 2000
    assert len(dataset.get_image_coordinates_list()) == stored
    assert dataset.read_image(time=stored - 1).shape == (512, 512)


@pytest.mark.parametrize("backend", ["micromanager", "microscope"])
def test_acquire_with_device_backends(tmp_path, backend):
    result = run(
        "acquire",
        "--backend",
        backend,
        "--time",
        "2",
        "--z",
        "0:2:1",
        "--channels",
        "DAPI,FITC",
        "--exposure",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        backend,
    )
    assert result.returncode == 0, result.stderr
    reader = NDTiffReader(tmp_path / f"{backend}_1")
    assert reader.axes == {"time": [0, 1], "channel": ["DAPI", "FITC"], "z": [0, 1, 2]}


def test_acquire_with_a_micromanager_configuration_file(tmp_path, micromanager_config):
    config = micromanager_config
    result = run(
        "acquire",
        "--backend",
        "micromanager",
        "--mm-config",
        str(config),
        "--time",
        "2",
        "--channels",
        "DAPI,FITC",
        "--out",
        str(tmp_path),
        "--name",
        "cfg",
    )
    assert result.returncode == 0, result.stderr
    assert NDTiffReader(tmp_path / "cfg_1").axes == {"time": [0, 1], "channel": ["DAPI", "FITC"]}


@pytest.mark.parametrize("cameras", ["Multi", "Cam1,Cam2"], ids=["multi-camera", "two-cameras"])
def test_acquire_with_micromanager_cameras_together(tmp_path, multi_camera_config, cameras):
    """Micro-Manager's own demo adapters: its Multi Camera device, or two cameras named."""
    result = run(
        "acquire",
        "--backend",
        "micromanager",
        "--mm-config",
        str(multi_camera_config),
        "--camera",
        cameras,
        "--time",
        "4",
        "--sequence",
        "t",
        "--exposure",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        "pair",
    )
    assert result.returncode == 0, result.stderr
    assert "8 of 8 frames stored" in result.stdout
    reader = NDTiffReader(tmp_path / "pair_1")
    assert reader.axes == {"time": [0, 1, 2, 3], "camera": ["Cam1", "Cam2"]}
    for camera in ("Cam1", "Cam2"):
        assert camera_of(reader.read_frame({"time": 3, "camera": camera})) == camera

"""``exengine acquire --resume``: interrupted runs (Ctrl-C, SIGKILL at Hypothesis-chosen times)
continue in the same dataset and read like an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exengine.storage.ndtiff_reader import INDEX_NAME, NDTiffReader
from exengine.storage.omezarr_reader import OMEZarrDataset
from micromanager_helpers import camera_of

EXENGINE = [sys.executable, "-c", "from napari_exengine.exengine_script import console; console()"]
#: 4 time points 0.3 s apart, 2 channels, 3 z planes: 24 frames in about 1.5 s.
PLAN = ["--time", "4", "--interval", "0.3", "--channels", "DAPI,FITC", "--z", "0:2:1"]


def run(*args, timeout=120):
    return subprocess.run([*EXENGINE, *args], capture_output=True, text=True, timeout=timeout)


STORAGES = {
    "ndtiff": "napari-exengine.storage.ndtiff",
    "omezarr": "napari-exengine.storage.omezarr",
}


def start(out, name, storage="ndtiff"):
    return subprocess.Popen(
        [
            *EXENGINE,
            "acquire",
            *PLAN,
            "--storage",
            STORAGES[storage],
            "--out",
            str(out),
            "--name",
            name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def dataset_path(out, name, storage):
    return out / (f"{name}_1.ome.zarr" if storage == "omezarr" else f"{name}_1")


def index_keys(path):
    """Every entry of the index (or every frame's record), duplicates included."""
    if str(path).endswith(".ome.zarr"):
        with open(os.path.join(path, "frame_metadata.jsonl")) as f:
            return [json.loads(line)["coords"] for line in f]
    with open(os.path.join(path, INDEX_NAME), "rb") as f:
        data = f.read()
    keys, position = [], 0
    while position + 4 <= len(data):
        (length,) = struct.unpack_from("<I", data, position)
        if length == 0:
            break
        keys.append(json.loads(data[position + 4 : position + 4 + length]))
        position += 4 + length
        (name_length,) = struct.unpack_from("<I", data, position)
        position += 4 + name_length + 32
    return keys


def frames(path):
    reader = open_dataset(path)
    try:
        return {
            json.dumps(c, sort_keys=True): hashlib.sha1(reader.read_frame(c).tobytes()).hexdigest()
            for c in reader.coordinates()
        }
    finally:
        reader.close()


def open_dataset(path):
    if str(path).endswith(".ome.zarr"):
        dataset = OMEZarrDataset(path)
        dataset.close = lambda: None
        return dataset
    return NDTiffReader(path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    process = start(out, "whole")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return NDTiffReader(out / "whole_1")


def resume_and_check(path, before):
    """Resume the dataset at ``path`` that held ``before`` (``frames``); the frames it held are
    untouched and no coordinates are stored twice. Returns its frames after."""
    result = run("acquire", "--resume", str(path))
    assert result.returncode == 0, result.stderr
    count = len(before)
    assert f"Resuming {path}: {count} frame{'s' * (count != 1)} stored" in result.stdout
    assert "(time-lapse intervals restart now)" in result.stdout
    after = frames(path)
    assert {k: after[k] for k in before} == before  # untouched
    keys = [json.dumps(k, sort_keys=True) for k in index_keys(path)]
    assert len(keys) == len(set(keys))  # no duplicates
    return after


def check_resumed_like_uninterrupted(path, before, uninterrupted):
    after = resume_and_check(path, before)
    expected = {json.dumps(c, sort_keys=True) for c in uninterrupted.coordinates()}
    assert set(after) == expected  # no gaps
    reader = open_dataset(path)
    assert {a: list(v) for a, v in reader.axes.items()} == uninterrupted.axes
    reader.close()


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_a_stopped_run_resumes_to_an_uninterrupted_one(tmp_path, uninterrupted, storage):
    process = start(tmp_path, "stopped", storage)
    while "running:" not in process.stdout.readline():
        assert process.poll() is None, process.stderr.read()
    time.sleep(0.4)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    path = dataset_path(tmp_path, "stopped", storage)
    before = frames(path)
    assert 0 < len(before) < 24
    check_resumed_like_uninterrupted(path, before, uninterrupted)
    again = run("acquire", "--resume", str(path))
    assert again.returncode == 2
    assert "already complete: all 24 frames of its plan are stored" in again.stderr


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delay=st.floats(0.0, 1.5), storage=st.sampled_from(sorted(STORAGES)))
def test_sigkill_at_any_time_then_resume(tmp_path_factory, uninterrupted, delay, storage):
    out = tmp_path_factory.mktemp("killed")
    process = start(out, "killed", storage)
    while "running:" not in process.stdout.readline():
        assert process.poll() is None, process.stderr.read()
    time.sleep(delay)
    process.kill()  # SIGKILL: nothing is finished, the index may end in half an entry
    process.wait(30)
    path = dataset_path(out, "killed", storage)
    before = frames(path) if os.path.exists(path) else {}
    if not before:  # killed before its first frame
        assert "holds no frame yet" in run("acquire", "--resume", str(path)).stderr
        return
    if len(before) == 24:
        assert "already complete" in run("acquire", "--resume", str(path)).stderr
        return
    check_resumed_like_uninterrupted(path, before, uninterrupted)
    sizes = [os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)]
    assert max(sizes) < 50e6  # image files a crash left at their reserved 4 GB are cut back


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    result = run("acquire", "--resume", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "is not a dataset to resume" in result.stderr
    result = run("acquire", "--resume", str(tmp_path), "--time", "3")
    assert result.returncode == 2
    assert "--resume continues the dataset's own plan, devices and storage: drop --time" in (
        result.stderr
    )
    made = run(
        "acquire",
        "--time",
        "2",
        "--processor",
        "napari-exengine.processor.frame_averaging:frames=2",
        "--out",
        str(tmp_path),
        "--name",
        "processed",
    )
    assert made.returncode == 0, made.stderr
    result = run("acquire", "--resume", str(tmp_path / "processed_1"))
    assert result.returncode == 2
    assert "acquired with processors (napari-exengine.processor.frame_averaging)" in (result.stderr)
    result = run("acquire", "--resume", "s3://KEY:hush42@bucket/run_1.ome.zarr")
    assert result.returncode == 2
    assert "carries credentials" in result.stderr and "hush42" not in result.stderr


def test_the_summary_holds_what_rebuilds_the_run(tmp_path):
    result = run("acquire", "--time", "2", "--exposure", "3", "--out", str(tmp_path), "--name", "s")
    assert result.returncode == 0, result.stderr
    summary = NDTiffReader(tmp_path / "s_1").summary_metadata
    assert summary["Plan"]["id"] == "multi_d"
    assert summary["Backend"] == "simulated"
    assert summary["Devices"]["camera"] == "Camera"
    state = summary["DeviceState"]
    assert state["xy"] == [0.0, 0.0]
    assert state["cameras"]["Camera"]["exposure"] == 3
    assert state["cameras"]["Camera"]["roi"] == [0, 0, 512, 512]


def test_device_state_is_restored(scope):
    from napari_exengine.device_sets import device_state, load_device_set, restore_device_state

    devices = load_device_set("simulated")
    devices.xy.set_position(120.0, -40.0)
    devices.camera.exposure = 7.0
    state = device_state(devices)
    devices.xy.set_position(0.0, 0.0)
    devices.camera.exposure = 1.0
    restore_device_state(devices, json.loads(json.dumps(state)))
    assert tuple(devices.xy.get_position()) == (120.0, -40.0)
    assert devices.camera.exposure == 7.0


def test_a_dataset_is_resumed_by_one_process_at_a_time(tmp_path):
    import fcntl

    made = run("acquire", "--time", "3", "--out", str(tmp_path), "--name", "busy")
    assert made.returncode == 0, made.stderr
    with open(tmp_path / "busy_1" / INDEX_NAME, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a writer still running holds it
        result = run("acquire", "--resume", str(tmp_path / "busy_1"))
    assert result.returncode == 2
    assert "is being written by another process" in result.stderr
    empty = run("acquire", "--resume", "")
    assert empty.returncode == 2 and "--resume needs the folder" in empty.stderr
    assert not any(p.name.startswith("acquisition") for p in tmp_path.iterdir())


def test_a_plan_that_ended_by_itself_is_complete(tmp_path):
    made = run(
        "acquire",
        "--plan",
        "acquire_until",
        "give_up_after=3",
        "--out",
        str(tmp_path),
        "--name",
        "u",
    )
    assert made.returncode == 0, made.stderr
    result = run("acquire", "--resume", str(tmp_path / "u_1"))
    assert result.returncode == 2
    assert "is already complete: its plan ended by itself" in result.stderr


@pytest.mark.parametrize(
    "change, reason",
    [
        ("dtype", "The camera gives uint16 frames, the dataset holds uint8"),
        ("channel", "which its plan does not make"),
        ("processors", "'Processors' is damaged"),
    ],
)
def test_datasets_that_do_not_match_their_plan_are_refused(tmp_path, change, reason):
    import numpy as np

    from exengine.storage import NDTiffStorage

    made = run(
        "acquire", "--time", "3", "--channels", "DAPI", "--out", str(tmp_path), "--name", "m"
    )
    assert made.returncode == 0, made.stderr
    summary = NDTiffReader(tmp_path / "m_1").summary_metadata
    coords, dtype = {"time": 0, "channel": "DAPI"}, np.uint16
    if change == "dtype":
        dtype = np.uint8
    elif change == "channel":
        coords["channel"] = "Cy5"
    else:
        summary["Processors"] = "frame_averaging"
    storage = NDTiffStorage(tmp_path, "changed", summary)
    storage.put(coords, np.zeros((512, 512), dtype), {})
    storage.close()
    result = run("acquire", "--resume", storage.path)
    assert result.returncode == 2, result.stderr
    assert reason.replace("'Processors'", "Processors") in result.stderr.replace("'", "")


def test_a_multi_camera_run_killed_then_resumed(tmp_path, multi_camera_config):
    """Micro-Manager's own demo adapters: a Multi Camera of two 8-bit cameras, killed mid-run."""
    process = subprocess.Popen(
        [
            *EXENGINE,
            "acquire",
            "--backend",
            "micromanager",
            "--mm-config",
            str(multi_camera_config),
            "--camera",
            "Multi",
            "--exposure",
            "1",
            "--time",
            "8",
            "--interval",
            "0.3",
            "--out",
            str(tmp_path),
            "--name",
            "pair",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while "running:" not in process.stdout.readline():
        assert process.poll() is None, process.stderr.read()
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    path = tmp_path / "pair_1"
    before = frames(path)
    assert 0 < len(before) < 16
    after = resume_and_check(path, before)
    assert len(index_keys(path)) == len(after) == 16
    reader = NDTiffReader(path)
    assert reader.axes == {"time": list(range(8)), "camera": ["Cam1", "Cam2"]}
    for coords in reader.coordinates():
        assert camera_of(reader.read_frame(coords)) == coords["camera"], coords

"""``exengine acquire``: every setting checked before anything moves or is created (exit 2, nothing
left behind), open-ended time-lapses, contributed plans, and what accumulating processors still
hold."""

from __future__ import annotations

import inspect
import io
import os
import signal
import subprocess
import sys
import time

import pytest

from exengine.plans import acquire_until
from exengine.storage.ndtiff_reader import NDTiffReader
from napari_exengine.cli import main

EXENGINE = [sys.executable, "-c", "from napari_exengine.exengine_script import console; console()"]


def acquire(tmp_path, *args):
    out = io.StringIO()
    status = main(["acquire", *args, "--out", str(tmp_path / "out")], stream=out)
    return status, out.getvalue()


@pytest.mark.parametrize(
    "args, reason",
    [
        (
            ["--time", "2", "--channels", "DAPI,BOGUS"],
            "Channel.channel = 'BOGUS' is not allowed; valid: 'DAPI'",
        ),
        (["--z", "0:6000:1000"], r"Z position = 6000 is outside its limits [-5000, 5000]"),
        (["--time", "2", "--interval", "nan"], "interval must be a finite number, got nan"),
        (["--positions", "nan,nan"], "must be finite numbers"),
        (
            ["--processor", "napari-exengine.processor.background_subtraction:level=abc"],
            "level must be a finite number",
        ),
        (["--time", "0"], "time must be a whole number of at least 1, got 0"),
        (["--exposure", "-5"], "Camera.exposure = -5 is outside its limits [0, 10000]"),
        (["--interval", "2"], "A time interval (2.0 s) needs a number of time points"),
        (["--exposures", "5"], "Channel exposures need channels"),
        (["--labels", "a"], "Position labels need positions"),
        (["--z", "0:inf:1"], "The z end must be a finite number of µm, got inf"),
        (["--mm-config", ""], "--mm-config needs the path"),
        (["--time", "1000000000"], "need about 488,281.2 GB"),
        (["--z", "0:1e12:1e-3"], "makes 1e+15 z planes; at most 1,000,000,000"),
        (["--time", "2", "--until-stopped"], "not both"),
        (
            [
                "--time",
                "2",
                "--z",
                "0:10:2",
                "--processor",
                "napari-exengine.processor.max_intensity_projection:z_planes=10",
            ],
            "z_planes=10",
        ),
        (
            ["--plan", "napari-exengine.plan.grid_scan", "rows=0"],
            "rows must be a whole number of at least 1, got 0",
        ),
        (
            ["--plan", "grid_scan", "rowz=2"],
            "grid_scan has no setting 'rowz'; its settings: rows, columns, overlap",
        ),
        (["--plan", "grid_scan", "--time", "3"], "time belong to the multi-D plan"),
        (["--plan", "no_such_plan"], "No plan named 'no_such_plan'"),
    ],
)
def test_bad_settings_exit_2_with_the_reason_and_create_nothing(tmp_path, capsys, args, reason):
    status, _ = acquire(tmp_path, *args)
    error = capsys.readouterr().err
    assert status == 2, error
    assert reason in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, text, reason",
    [
        ("bad.yaml", "time: [1, 2\nz: 3\n", "is not valid YAML"),
        ("bad.json", '{"time": 2,}', "is not valid JSON: Expecting property name"),
        ("typed.yaml", "time: ten\n", "time must be a whole number of at least 1, got 'ten'"),
        ("nostep.yaml", "z: {start: 0, stop: 4}\n", "missing step"),
        ("typo.yaml", "time: 2\nchanels: [DAPI]\n", "unknown setting 'chanels'"),
    ],
)
def test_bad_acquisition_files(tmp_path, capsys, name, text, reason):
    path = tmp_path / name
    path.write_text(text)
    status, _ = acquire(tmp_path, "--file", str(path))
    error = capsys.readouterr().err
    assert status == 2 and reason in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_processor_given_as_a_string_in_a_file(tmp_path, capsys):
    path = tmp_path / "settings.yaml"
    path.write_text(
        "time: 2\nexposure: 0\nprocessor: "
        "napari-exengine.processor.background_subtraction:level=10\n"
    )
    status, out = acquire(tmp_path, "--file", str(path))
    assert status == 0, capsys.readouterr().err
    assert "Done: 2 of 2 frames stored" in out


def test_projection_takes_the_plans_z_planes_and_a_partial_average_is_reported(tmp_path, capsys):
    status, out = acquire(
        tmp_path,
        "--time",
        "2",
        "--z",
        "0:10:2",
        "--exposure",
        "0",
        "--processor",
        "napari-exengine.processor.max_intensity_projection",
        "--name",
        "mip",
    )
    assert status == 0, capsys.readouterr().err
    assert "Done: 12 of 12 frames acquired, 2 stored" in out
    status, out = acquire(
        tmp_path,
        "--time",
        "5",
        "--exposure",
        "0",
        "--processor",
        "napari-exengine.processor.frame_averaging:frames=2",
        "--name",
        "avg",
    )
    assert status == 0 and "note: frame_averaging frames=2" in out and "Partial" in out
    assert "Done: 5 of 5 frames acquired, 3 stored" in out


def test_contributed_plan_from_the_command_line(tmp_path, capsys):
    status, _ = acquire(
        tmp_path,
        "--plan",
        "napari-exengine.plan.grid_scan",
        "rows=2",
        "columns=2",
        "--exposure",
        "0",
        "--name",
        "grid",
    )
    assert status == 0, capsys.readouterr().err
    reader = NDTiffReader(tmp_path / "out" / "grid_1")
    assert reader.axes == {"row": [0, 1], "column": [0, 1]}


def test_list_shows_plans(capsys):
    out = io.StringIO()
    assert main(["list"], stream=out) == 0
    listing = out.getvalue()
    assert "plan      napari-exengine.plan.grid_scan" in listing
    assert "napari-exengine.plan.overview_then_zoom" in listing


@pytest.mark.parametrize("plan, frames", [("acquire_until", 50), ("overview_then_zoom", 9 + 5)])
def test_the_adaptive_plans_stop_with_their_defaults_on_the_simulator(
    tmp_path, capsys, plan, frames
):
    started = time.monotonic()
    status, out = acquire(tmp_path, "--plan", plan, "--name", plan)
    assert status == 0, capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert f"Done: {frames} " in out and "frames stored" in out
    cap = inspect.signature(acquire_until).parameters["max_time_points"].default
    assert frames * 100 < cap  # acquire_until stopped itself, well before its cap


@pytest.mark.slow
def test_until_stopped_runs_until_ctrl_c_and_stores_everything(tmp_path):
    process = subprocess.Popen(
        [
            *EXENGINE,
            "acquire",
            "--until-stopped",
            "--exposure",
            "5",
            "--out",
            str(tmp_path),
            "--name",
            "endless",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.isdir(tmp_path / "endless_1") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "frames/s" in out and "elapsed" in out and "left" not in out.split("Stopping")[0]
    reader = NDTiffReader(tmp_path / "endless_1")
    times = reader.axes["time"]
    assert len(times) > 5 and times == list(range(len(times)))
    assert f"Stopped: {len(times)} frames stored" in out


@pytest.mark.slow
def test_stop_during_a_long_interval_is_prompt(tmp_path):
    process = subprocess.Popen(
        [
            *EXENGINE,
            "acquire",
            "--time",
            "3",
            "--interval",
            "20",
            "--exposure",
            "0",
            "--out",
            str(tmp_path),
            "--name",
            "slow",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.isdir(tmp_path / "slow_1") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)  # the first frame is taken; 18 s of the interval are left
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert took < 3.0
    assert "Stopped: 1 of 3 frames stored" in out


@pytest.mark.slow
def test_processors_on_a_local_dask_cluster_store_what_local_ones_do(tmp_path, capsys):
    common = [
        "--time",
        "4",
        "--exposure",
        "0",
        "--processor",
        "napari-exengine.processor.background_subtraction:level=50",
    ]
    assert acquire(tmp_path, *common, "--name", "here")[0] == 0
    assert acquire(tmp_path, *common, "--processing", "cluster:2", "--name", "dask")[0] == 0, (
        capsys.readouterr().err
    )
    here, there = (
        NDTiffReader(tmp_path / "out" / "here_1"),
        NDTiffReader(tmp_path / "out" / "dask_1"),
    )
    assert here.coordinates() == there.coordinates() and len(here.coordinates()) == 4
    for coords in here.coordinates():
        assert (here.read_frame(coords) == there.read_frame(coords)).all()


def test_processing_needs_a_valid_place_and_a_processor(tmp_path, capsys):
    assert acquire(tmp_path, "--time", "2", "--processing", "cluster:2")[0] == 2
    assert "there is no processor: add one" in capsys.readouterr().err
    assert (
        acquire(
            tmp_path,
            "--time",
            "2",
            "--processor",
            "napari-exengine.processor.frame_averaging",
            "--processing",
            "somewhere",
        )[0]
        == 2
    )
    assert "got 'somewhere'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_plan_failing_mid_run_exits_1_and_keeps_its_frames(tmp_path, capsys, monkeypatch):
    from exengine.devices.simulated import SimulatedXYStage

    moves = []
    real = SimulatedXYStage.set_position

    def failing(self, x, y):
        moves.append((x, y))
        if len(moves) == 3:
            raise RuntimeError("stage controller lost")
        real(self, x, y)

    monkeypatch.setattr(SimulatedXYStage, "set_position", failing)
    status, _ = acquire(
        tmp_path, "--plan", "grid_scan", "rows=2", "columns=2", "--exposure", "0", "--name", "g"
    )
    error = capsys.readouterr().err
    assert status == 1 and "stage controller lost" in error and "2 frames stored" in error
    assert len(NDTiffReader(tmp_path / "out" / "g_1").coordinates()) == 2

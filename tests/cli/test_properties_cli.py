"""Property-based tests (Hypothesis, issue 17) of ``exengine``: random argument lists end in exit
status 0 or 2 — never a traceback or an exit 1."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_exengine import cli

P = "napari-exengine.processor."
#: per option: realistic values, values just outside what is valid, and junk (any option also gets
#: JUNK)
OPTION_VALUES: dict[str, list[str]] = {
    "--time": ["0", "1", "2", "3", "-1", "2.5", "ten", "1e3"],
    "--interval": ["0", "0.001", "-1", "nan", "inf", "1e309", "abc"],
    "--z": [
        "0:4:2",
        "0:2:1",
        "4:0:2",
        "-2:2:2",
        "0:inf:1",
        "0:0:0",
        "0:6000:1000",
        "1:2",
        "a:b:c",
        "nan:1:1",
        "0:5:5",
        "0:1:1e-300",
    ],
    "--channels": ["DAPI", "DAPI,FITC", "DAPI,BOGUS", "DAPI,DAPI", ",", "FITC,,Cy5"],
    "--exposures": ["5", "5,10", "-5", "nan", "1e5", "a,b", "5,"],
    "--exposure": ["0", "1", "-5", "10001", "nan", "inf"],
    "--positions": [
        "0,0",
        "1,2;3,4",
        "0,0,1;5,5,2",
        "nan,nan",
        "inf,0",
        "1,2,3;4,5",
        "1e308,1e308",
        "0,0;",
        ";",
    ],
    "--labels": ["A", "A,B", "A,A", ",", "1,2"],
    "--order": ["tpcz", "zcpt", "tz", "tt", "xyz", "TPCZ", "pt", ""],
    "--sequence": ["z", "c", "cz", "t", "zz", "q"],
    "--backend": ["simulated", "microscope", "micromanager", "none"],
    "--mm-config": ["", "missing.cfg", "/"],
    "--storage": [
        "napari-exengine.storage.ndtiff",
        "napari-exengine.storage.ndram",
        "napari-exengine.storage.omezarr",
        "no.such.storage",
        "napari-exengine.processor.frame_averaging",
    ],
    "--processor": [
        P + "frame_averaging",
        P + "frame_averaging:frames=2",
        P + "frame_averaging:frames=0",
        P + "frame_averaging:frames=true",
        P + "frame_averaging:frames=[1]",
        P + "frame_averaging:axis=z",
        P + "max_intensity_projection",
        P + "max_intensity_projection:z_planes=2.5",
        P + "max_intensity_projection:z_planes=0",
        P + "max_intensity_projection:keep_planes=maybe",
        P + "background_subtraction:level=abc",
        P + "background_subtraction:level=nan",
        P + "background_subtraction:dark_image=missing.tif",
        P + "background_subtraction:bogus=1",
        P + "flat_field_correction",
        P + "flat_field_correction:flat_image=42",
        "no.such.processor",
        P + "frame_averaging:=",
        "x:=",
    ],
    "--name": ["acq", "", "..", "../escape", "a/b", "a" * 300, "é"],
    "--plan": ["napari-exengine.plan.multi_d", "no.such.plan", "napari-exengine.storage.ndtiff"],
}
JUNK = [
    "",
    " ",
    "-",
    "--",
    "-1",
    "0x10",
    "1e309",
    "nan",
    "é",
    "\x00",
    "{}",
    "[1, 2]",
    "time=2",
    "z_start=abc",
    "=",
    "a=b",
]
FLAGS = ["--until-stopped", "--help", "-h", "--version", "--bogus", "--time=2", "--z=0:2:1"]
#: values that keep an acquisition short; others of these options are replaced (the sandbox)
SHORT = {"--time": "3", "--interval": "0.001", "--exposure": "1"}


@st.composite
def argument_lists(draw: Any, files: dict[str, str]) -> list[str]:
    """``exengine`` arguments: mostly ``acquire`` with options and realistic, borderline or junk
    values."""
    command = draw(
        st.sampled_from(["acquire"] * 6 + ["info", "list", "bogus", "--version", "-h", ""])
    )
    argv = [command] if command else []
    for _ in range(draw(st.integers(0, 6))):
        # mostly an option with a realistic value; at times a flag, a file, junk
        kind = draw(st.integers(0, 19))
        if kind == 0:
            argv.append(draw(st.sampled_from(FLAGS)))
        elif kind == 1:
            argv += ["--file", draw(st.sampled_from([*sorted(files.values()), "missing.yaml"]))]
        else:
            option = draw(st.sampled_from(sorted(OPTION_VALUES)))
            argv.append(option)
            if kind > 3:
                argv.append(draw(st.sampled_from(OPTION_VALUES[option])))
            elif kind > 2:
                argv.append(draw(st.sampled_from(JUNK) | st.text(max_size=5)))
    if command == "info":
        argv.append(draw(st.sampled_from([*files.values(), "missing", ""])))
    return argv


def _sandboxed(argv: list[str], out: str) -> list[str]:
    """``argv`` writing only in ``out`` and never running long: no --out of its own, short
    time-lapses, no open-ended runs."""
    argv = [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]
    if argv[:1] == ["acquire"]:
        argv = [a for a in argv if a != "--until-stopped"]
        for i, arg in enumerate(argv[:-1]):
            value = argv[i + 1]
            if arg in SHORT and not value.startswith("-") and not _is_short(arg, value):
                argv[i + 1] = SHORT[arg]
        argv += ["--out", out]
    return argv


def _is_short(option: str, value: str) -> bool:
    """Whether ``value`` of ``option`` keeps the run short: small, or not a number (NaN, junk:
    refused)."""
    try:
        number = float(value)
    except ValueError:
        return True
    return number != number or number <= float(SHORT[option])


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Exit status of ``exengine argv`` run in this process (argparse's exits included), and its
    stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(argv, stream=io.StringIO())
        except SystemExit as e:  # argparse: 2 for bad usage, 0 for --help and --version
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return status, stderr.getvalue()


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cli-files")
    contents = {
        "good.yaml": "time: 2\nchannels: [DAPI]\n",
        "typo.yaml": "chanels: [DAPI]\n",
        "broken.yaml": "time: [1, 2\n",
        "hostile.yaml": "time: !!python/object/apply:os.getcwd []\n",
        "list.yaml": "- 1\n- 2\n",
        "empty.yaml": "",
        "good.json": json.dumps({"time": 1}),
        "broken.json": "{time: 1",
        "binary.yaml": "\x00\x01\x02",
    }
    paths = {}
    for name, text in contents.items():
        (folder / name).write_text(text)
        paths[name] = str(folder / name)
    return paths


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_argument_lists_exit_0_or_2_never_a_traceback(data, cli_files, tmp_path):
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "out"  # one per example
    argv = _sandboxed(data.draw(argument_lists(cli_files)), str(out))
    status, stderr = run_cli(argv)
    assert status in (0, 2), f"exengine {argv!r} exited {status}: {stderr}"
    assert "Traceback" not in stderr
    if status == 2 and argv[:1] == ["acquire"]:
        assert not out.exists() or not any(out.iterdir()), (
            f"a refused plan left a dataset behind: {argv!r}"
        )


# Inputs the test above found that once exited 1 (fixed): kept as regression cases.
CLI_FINDINGS = [
    ["acquire", "--z", "0:1:1e-300"],
]


@pytest.mark.parametrize("argv", CLI_FINDINGS)
def test_cli_findings_exit_0_or_2(argv, tmp_path):
    status, stderr = run_cli(_sandboxed(list(argv), str(tmp_path / "out")))
    assert status in (0, 2) and "Traceback" not in stderr, stderr

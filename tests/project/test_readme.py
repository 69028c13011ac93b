"""The README's headless example runs as written."""

from __future__ import annotations

import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
CI_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "run"


def test_readme_commands_and_python_example(capsys):
    text = README.read_text()
    assert 'pip install -e ".[all]" && napari-exengine' in text
    command = (
        'pip install -e ".[all,test]" -e examples/exengine-denoise -e '
        "examples/exengine-npy-storage "
        "-e examples/exengine-spiral-plan && pytest"
    )
    assert command in text
    assert CI_SCRIPT.read_text().count(command) == 1
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert "12 frames in" in capsys.readouterr().out


def test_ci_installs_with_the_readme_command_alone():
    commands = [line for line in CI_SCRIPT.read_text().splitlines() if not line.startswith("#")]
    assert not any("constraint" in line.lower() for line in commands)


def test_the_files_the_readme_names_ship_and_run(tmp_path):
    from napari_exengine.cli import main

    root = README.parent
    named = re.findall(r"--file (\S+)", README.read_text())
    assert named and all((root / path).is_file() for path in named), named
    out = io.StringIO()
    status = main(["acquire", "--file", str(root / named[0]), "--out", str(tmp_path)], out)
    assert status == 0 and "Done: 30 of 30 frames stored" in out.getvalue()

"""The README's headless example runs as written."""

from __future__ import annotations

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

"""The documentation builds without warnings and its Python examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from exengine.devices.simulated import create_simulated_devices

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_sphinx_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def code_blocks():
    for page in sorted(DOCS.glob("*.rst")):
        for i, block in enumerate(
            re.findall(r".. code-block:: python\n\n((?:    .*\n|\n)+)", page.read_text())
        ):
            yield pytest.param(
                page.name, "\n".join(line[4:] for line in block.splitlines()), id=f"{page.stem}-{i}"
            )


@pytest.mark.parametrize("page, code", list(code_blocks()))
def test_docs_code_blocks_run(page, code):
    if "create_simulated_devices" not in code:
        create_simulated_devices()
    exec(compile(code, page, "exec"), {})

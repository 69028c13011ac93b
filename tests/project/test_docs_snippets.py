"""Every Python snippet of the docs (``docs/*.rst``), the README and the user's ``data.rst`` runs
on its own, as written, each in a fresh process with a fresh working directory.

A snippet that goes on from the one before says so on its first line, visibly in the docs::

    # Continues from the snippet above.

and runs after it (and after whatever that one continues from). Interpreter startup is shared: one
runner process imports the engine once, then forks a child per snippet, before any engine, device
or thread exists (the simulated specimen, a pure function of the channel, is rendered there
once too); the child runs the snippet as a script (``__name__ == "__main__"``) and exits as
Python does (waiting for non-daemon threads, then running the ``atexit`` handlers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "data.rst"
CONTINUES = "# Continues from the snippet above."
#: The seed's snippets that are complete as written; the others name placeholders
#: (``SomeDataStorageImplementation``, ``SomeDataProducingEvent``) and run, with real ones, in
#: tests/kernel/test_seed_examples.py.
SEED_COMPLETE = (0, 1, 3, 4)
SNIPPET_TIMEOUT_S = 120

RUNNER = r"""
import atexit, io, json, os, signal, sys, tempfile, threading, time, traceback

import numpy  # noqa: F401 -- what most snippets import, loaded once before the forks
import exengine, exengine.acquisition, exengine.data, exengine.events, exengine.plans  # noqa
import exengine.devices.simulated, exengine.storage  # noqa
from exengine.devices.simulated_specimen import CHANNELS, render_clean

for channel in CHANNELS:  # the specimen is a pure function of the channel: rendered once
    render_clean((0, 0, 0.0, channel, 10.0, 1, (0, 0, 8, 8), 16, True, 1.0))
assert threading.active_count() == 1, "the runner must fork before any thread exists"


def child(code, name, out):
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0, closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", 0, closefd=False), write_through=True)
    os.chdir(tempfile.mkdtemp())
    tempfile.tempdir = os.getcwd()
    status = 0
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    for thread in threading.enumerate():  # as Python's exit: non-daemon threads first
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    os._exit(status)


def run(snippet, timeout):
    with tempfile.TemporaryFile() as out:
        sys.stdout.flush()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(snippet["code"], snippet["id"], out.fileno())
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - started > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.01)
        out.seek(0)
        output = out.read().decode(errors="replace")
    code = None if status is None else os.waitstatus_to_exitcode(status)
    return {"status": code, "output": output, "seconds": time.monotonic() - started}


snippets, timeout = json.load(sys.stdin)
print(json.dumps({s["id"]: run(s, timeout) for s in snippets}))
"""


@dataclass(frozen=True)
class Snippet:
    """One snippet: ``code`` is what runs (the snippets it continues from, then its own)."""

    id: str
    code: str
    own: str


def rst_blocks(text: str) -> list[str]:
    """The Python code blocks of a reStructuredText page, dedented."""
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|[ \t]*\n)+)", text)
    return ["\n".join(line[4:] for line in block.splitlines()).strip() + "\n" for block in blocks]


def markdown_blocks(text: str) -> list[str]:
    """The Python code blocks of a Markdown page."""
    return re.findall(r"```python\n(.*?)```", text, re.S)


def chained(page: str, blocks: list[str], keep: tuple[int, ...] | None = None) -> list[Snippet]:
    """The page's snippets, each with the code of those it continues from."""
    snippets: list[Snippet] = []
    for i, block in enumerate(blocks):
        code = block
        if block.startswith(CONTINUES):
            assert snippets, f"{page}-{i} continues from a snippet above, but none is above"
            code = snippets[-1].code + "\n" + block
        snippets.append(Snippet(f"{page}-{i}", code, block))
    return [s for i, s in enumerate(snippets) if keep is None or i in keep]


def all_snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for page in sorted((ROOT / "docs").glob("*.rst")):
        found += chained(page.stem, rst_blocks(page.read_text()))
    found += chained("README", markdown_blocks((ROOT / "README.md").read_text()))
    if SEED.is_file():
        found += chained("seed-data", rst_blocks(SEED.read_text()), SEED_COMPLETE)
    return found


SNIPPETS = all_snippets()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    """Every snippet run by one runner process (its temporary files under a pytest folder)."""
    folder = tmp_path_factory.mktemp("snippets")
    payload = json.dumps([[{"id": s.id, "code": s.code} for s in SNIPPETS], SNIPPET_TIMEOUT_S])
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=payload,
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "TMPDIR": str(folder)},
        timeout=SNIPPET_TIMEOUT_S * len(SNIPPETS),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_docs_readme_and_seed_have_snippets():
    pages = {s.id.rsplit("-", 1)[0] for s in SNIPPETS}
    assert {"usage", "acquisitions", "plans", "README"} <= pages
    assert len(SNIPPETS) >= 30


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs_on_its_own_in_a_fresh_process(snippet, results):
    result = results[snippet.id]
    assert result["status"] == 0, f"{snippet.id} failed:\n{snippet.code}\n---\n{result['output']}"


def test_the_seeds_outputs_are_what_its_comments_say(results):
    for snippet in SNIPPETS:
        if not snippet.id.startswith("seed-data"):
            continue
        said = re.findall(r"print\(.*?\)\s*# Output: (.*)", snippet.own)
        assert results[snippet.id]["output"].splitlines() == said, snippet.id


def test_a_snippet_that_continues_runs_after_the_one_above():
    blocks = ["x = 1\n", f"{CONTINUES}\ny = x + 1\n", f"{CONTINUES}\nprint(y)\n", "z = 0\n"]
    snippets = chained("page", blocks)
    assert snippets[2].code == f"x = 1\n\n{CONTINUES}\ny = x + 1\n\n{CONTINUES}\nprint(y)\n"
    assert snippets[3].code == "z = 0\n"
    with pytest.raises(AssertionError, match="none is above"):
        chained("page", [f"{CONTINUES}\nx = 1\n"])


def test_a_failing_snippet_is_reported_and_the_next_runs_isolated(tmp_path):
    snippets = [
        {"id": "sets", "code": "import builtins\nbuiltins.leak = 1\nraise ValueError('no')"},
        {"id": "reads", "code": "import builtins\nprint(hasattr(builtins, 'leak'))"},
        {"id": "hangs", "code": "import time\ntime.sleep(60)"},
    ]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([snippets, 2]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    results = json.loads(done.stdout)
    assert results["sets"]["status"] == 1 and "ValueError: no" in results["sets"]["output"]
    assert results["reads"] == {**results["reads"], "status": 0, "output": "False\n"}
    assert results["hangs"]["status"] is None and results["hangs"]["seconds"] < 10

"""The ``exengine`` console script: Ctrl-C is handled from its first moment.

The command itself (``napari_exengine.cli``) takes a few tenths of a second to import; a Ctrl-C
meanwhile, or before an acquisition has started, ends the command with one line and status 130,
not a traceback. Once an acquisition runs, Ctrl-C stops it (see ``cli``).
"""

from __future__ import annotations

import signal
import sys

#: Exit status after Ctrl-C (128 + 2): before an acquisition started, or one stopped or aborted
#: with everything acquired stored.
INTERRUPTED = 130


def console() -> None:
    """Run ``exengine`` with the process's arguments and exit with its status."""
    try:
        from .cli import main

        status = main(restore_signals=False)
    except KeyboardInterrupt:
        sys.stderr.write("exengine: interrupted before an acquisition started; nothing acquired\n")
        status = INTERRUPTED
    # everything is saved: a late Ctrl-C must not abort the exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)

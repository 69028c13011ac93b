"""Where processors run: choosing (``parse_location``: this machine, a local cluster of worker
processes, or a Dask scheduler's address), checking that a scheduler answers (``reach_scheduler``)
and starting local clusters (``start_local_cluster``). ``dask_processing`` runs processors there.
"""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LOCATION_HELP",
    "ProcessingLocation",
    "import_distributed",
    "parse_location",
    "reach_scheduler",
    "start_local_cluster",
]

EXTRA = "pip install 'napari-exengine[distributed]'"
#: Processing choices the panel and the command line offer (``parse_location`` accepts them all).
LOCATION_HELP = (
    "'local' (this machine), 'cluster:N' (a local cluster of N worker processes) or a Dask "
    "scheduler address such as 'tcp://10.0.0.5:8786'"
)


def import_distributed() -> Any:
    """The ``distributed`` package, or an ``ImportError`` naming the extra that brings it."""
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            f"Processing on a Dask cluster needs the 'distributed' extra: {EXTRA}"
        ) from error
    return distributed


#: Environment of the worker processes of the local clusters started here. Dask's nanny sets
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which also stops glibc from raising its mmap threshold: every
#: frame-sized array was a fresh mmap, and every free gave its pages back, so array code spent a
#: third of its time in page faults. Workers keep up to 128 MB of freed memory for the next frames.
WORKER_ENVIRON = {
    "MALLOC_TRIM_THRESHOLD_": 128 * 1024 * 1024,
    "MALLOC_MMAP_THRESHOLD_": 64 * 1024 * 1024,
}


#: Dask settings of the local clusters started here (their nannies pass them on to the workers). The
#: workers' statistical profiler samples the running task every 10 ms and the event-loop ticks every
#: 20 ms: idle, that cost 37 ms of CPU per second per worker (5 without), and a busy worker's task
#: gives up the GIL for each sample. They only feed the dashboard's plots.
CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def start_local_cluster(workers: int = 2, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` processes of one thread each, as ``cluster:N``
    starts, with ``WORKER_ENVIRON`` and ``CLUSTER_CONFIG`` (``kwargs`` go to ``LocalCluster``). Call
    it under ``if __name__ == "__main__":`` in scripts: the workers are spawned processes."""
    distributed = import_distributed()
    import dask

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    nested: dict[str, Any] = {}  # the nannies' own config, also for the workers they restart
    for dotted, value in CLUSTER_CONFIG.items():
        *parents, leaf = dotted.split(".")
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[leaf] = value
    options = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
        "config": dask.config.merge(dask.config.config, nested),
        **kwargs,
    }  # whole: it replaces
    with dask.config.set({**CLUSTER_CONFIG, "distributed.nanny.pre-spawn-environ": environ}):
        return distributed.LocalCluster(**options)


# ---------------------------------------------------------------------------------------- choosing
#: The most worker processes a local cluster may have: four per core of this machine (each is a
#: Python process of its own; tens of thousands would only exhaust the machine).
MAX_LOCAL_WORKERS = 4 * (os.cpu_count() or 1)
#: How long ``reach_scheduler`` waits for a scheduler to answer.
REACH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ProcessingLocation:
    """Where processors run: ``kind`` is "local" (this machine, in the handler's own thread),
    "local-cluster" (a ``LocalCluster`` of ``workers`` processes on this machine, started for the
    run) or "scheduler" (the Dask scheduler at ``address``)."""

    kind: Literal["local", "local-cluster", "scheduler"] = "local"
    workers: int = 0
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "local-cluster":
            return f"a local Dask cluster of {self.workers} worker processes"
        if self.kind == "scheduler":
            return f"the Dask scheduler at {self.address}"
        return "this machine"


def parse_location(where: str | ProcessingLocation | None) -> ProcessingLocation:
    """Parse a processing choice: ``None``/"local"/"this machine", "cluster"/"cluster:N" (N worker
    processes, default 2), or a scheduler address ("tcp://host:8786", "host:8786"). Raises
    ``ValueError`` naming the value and the valid forms. Starts and contacts nothing."""
    if isinstance(where, ProcessingLocation):
        return where
    if where is None:
        return ProcessingLocation()
    if not isinstance(where, str):
        raise ValueError(f"Where to process must be {LOCATION_HELP}; got {where!r}")
    text = where.strip()
    lowered = text.lower()
    if lowered in ("", "local", "this machine", "in-process"):
        return ProcessingLocation()
    for prefix in ("local-cluster", "cluster"):
        if lowered == prefix or lowered.startswith(prefix + ":"):
            count = lowered[len(prefix) + 1 :] or "2"
            if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
                raise ValueError(
                    f"A local cluster needs a whole number of workers from 1 to "
                    f"{MAX_LOCAL_WORKERS} (4 per core here), e.g. 'cluster:4'; got {where!r}"
                )
            return ProcessingLocation("local-cluster", workers=int(count))
    scheme, sep, rest = text.partition("://")
    host, colon, port = (rest if sep else text).rpartition(":")
    if (
        (not sep or scheme in ("tcp", "tls", "ucx", "ws", "wss", "inproc"))
        and colon
        and host
        and port.isdigit()
    ):
        return ProcessingLocation("scheduler", address=text if sep else f"tcp://{text}")
    raise ValueError(f"Where to process must be {LOCATION_HELP}; got {where!r}")


def reach_scheduler(where: ProcessingLocation, timeout: float = REACH_TIMEOUT_S) -> None:
    """For a scheduler address, check within ``timeout`` seconds that a Dask scheduler answers
    there; ``ConnectionError`` naming the address and why otherwise. Other locations need nothing.
    """
    if where.kind != "scheduler" or where.address is None:
        return
    scheme, _, rest = where.address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme in ("tcp", "tls"):  # refused or unroutable: at once (Dask would retry until timeout)
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except OSError as error:
            reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or error
            raise ConnectionError(_unreachable(where.address, reason, timeout)) from None
    distributed = import_distributed()

    async def identity() -> Any:
        comm = await distributed.comm.connect(where.address, timeout=timeout)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    with ThreadPoolExecutor(1) as pool:  # a loop of its own, whatever runs in this thread
        try:
            answer = pool.submit(asyncio.run, asyncio.wait_for(identity(), timeout)).result()
        except Exception as error:
            reason = (
                "no answer"
                if isinstance(error, TimeoutError)
                else f"{error}"[:200]
                if isinstance(error, OSError)
                else f"what answers is not a Dask scheduler: {type(error).__name__}"
            )
            raise ConnectionError(_unreachable(where.address, reason, timeout)) from None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise ConnectionError(
            _unreachable(where.address, "what answers is not a Dask scheduler", timeout)
        )


def _unreachable(address: str, reason: object, timeout: float) -> str:
    return (
        f"Cannot reach the Dask scheduler at {address} ({reason}, within {timeout:g} s); start one "
        "with 'dask scheduler' and give its address (tcp://HOST:8786)"
    )

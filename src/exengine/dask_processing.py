"""Run any processor on a Dask distributed cluster, within the ``DataHandler``'s memory budget.

Wrap a processor (a built-in, a plugin's, or a plain ``process_fn``) and hand the wrapper to the
``DataHandler`` as usual; the processor's own code does not change::

    processor = DaskProcessor(frame_averaging(frames=4), "tcp://10.0.0.5:8786")
    handler = DataHandler(storage, processor)

or let the user choose where with one string (the panel's and the command line's choices)::

    processor = run_processor_on(processor, "local")        # this machine (no Dask at all)
    processor = run_processor_on(processor, "cluster:4")    # a local cluster of 4 worker processes
    processor = run_processor_on(processor, "tcp://10.0.0.5:8786")  # the Dask scheduler there

What holds, and how:

- **Memory.** A frame sent to the cluster stays counted in the handler's budget until its outputs
  are back, and at most ``max_in_flight`` frames are on the cluster at once: a slow cluster slows
  the producer (``put`` blocks) and never grows memory.
- **Stateless processors** (declared ``stateful=False``) run on any worker, many frames at once.
- **Stateful processors** (accumulating; also every processor that does not declare itself, the
  safe default) run one frame at a time in acquisition order, as a chain of tasks that each take
  the processor's state from the task before (the state travels as a pickled copy, so a task can be
  re-run). In a ``ProcessorChain``, the leading stateless processors run in parallel and the rest
  in order.
- **Same results.** Outputs are taken back in acquisition order and stored exactly as locally:
  same frames, coordinates, pixels and metadata. ``flush`` runs on the cluster at finish.
- **Failures.** A processor raising on a worker is reported like a local one (the error, the
  producing future failed, accepted frames kept). Every task is pure and carries its frame, so
  when a worker process dies, Dask recomputes its tasks elsewhere and no frame is lost; the state
  chain is re-anchored every ``checkpoint_every`` frames, which bounds what the scheduler keeps.
- **Overhead.** Frames already waiting when one is sent go with it as one task (up to ``max_batch``
  and 1/16 of the memory budget): a Dask task costs milliseconds, so a fast camera pays it per
  batch.

Needs the ``distributed`` extra (``pip install 'napari-exengine[distributed]'``) on this machine
and the workers, and on the workers the packages the processor's code comes from.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from .kernel.data_coords import DataCoordinates
from .kernel.data_processor import DataProcessor, Frame
from .processors import ProcessorChain

__all__ = [
    "DaskProcessor",
    "ProcessingLocation",
    "parse_location",
    "reach_scheduler",
    "run_processor_on",
    "start_local_cluster",
]

EXTRA = "pip install 'napari-exengine[distributed]'"
#: Processing choices the panel and the command line offer (``parse_location`` accepts them all).
LOCATION_HELP = (
    "'local' (this machine), 'cluster:N' (a local cluster of N worker processes) or a Dask "
    "scheduler address such as 'tcp://10.0.0.5:8786'"
)


def _distributed() -> Any:
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
    distributed = _distributed()
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
    distributed = _distributed()

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


def run_processor_on(
    processor: DataProcessor | Callable[..., Any] | None,
    where: str | ProcessingLocation | None = "local",
    *,
    max_in_flight: int | None = None,
    timeout: float = 30.0,
) -> DataProcessor | None:
    """``processor`` ready to hand to a ``DataHandler``, running where ``where`` says (see
    ``parse_location``).

    "local" gives the processor back (a ``DataProcessor``); otherwise a ``DaskProcessor`` that owns
    the cluster connection (and the local cluster it started) and closes them when its handler
    finishes. ``None`` (no processing) stays ``None`` and starts nothing.
    """
    location = parse_location(where)
    if processor is None:
        return None
    if not isinstance(processor, DataProcessor):
        processor = DataProcessor(processor)
    if location.kind == "local":
        return processor
    return DaskProcessor(processor, location, max_in_flight=max_in_flight, timeout=timeout)


# ---------------------------------------------------------------------------- what runs on workers
class _Outcome:
    """A task's outputs, or the exception the processor raised (so the task itself never fails)."""

    __slots__ = ("error", "frames")

    def __init__(
        self, frames: list[Frame] | None = None, error: BaseException | None = None
    ) -> None:
        self.frames = frames or []
        self.error = error

    @classmethod
    def failed(cls, error: BaseException) -> _Outcome:
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # an exception that cannot travel back: keep its type name and text
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return cls(error=error)

    def unwrap(self) -> list[Frame]:
        if self.error is not None:
            raise self.error
        return self.frames


class _Step:
    """One link of a stateful chain: the processor's state after a batch, and the batch's
    outcomes."""

    __slots__ = ("outcomes", "state")

    def __init__(self, state: bytes, outcomes: list[_Outcome]) -> None:
        self.state = state
        self.outcomes = outcomes


def _load_processor(payload: bytes) -> DataProcessor:
    import cloudpickle

    processor: DataProcessor = cloudpickle.loads(payload)
    return processor


def _apply(processor: DataProcessor, frames: list[Frame]) -> _Outcome:
    try:
        return _Outcome([out for frame in frames for out in processor.process(*frame)])
    except BaseException as error:  # reported through the handler, as locally
        return _Outcome.failed(error)


def _run_parallel(processor: DataProcessor, frames: list[Frame]) -> list[_Outcome]:
    """A batch of frames through a stateless processor: one outcome per frame."""
    return [_apply(processor, [frame]) for frame in frames]


def _run_ordered(previous: bytes | _Step, inputs: list[Frame] | list[_Outcome]) -> _Step:
    """Restore the state (a fresh copy, so that this task can be re-run), process a batch of frames
    (or the parallel stage's outcomes for them) in order, and pickle the new state."""
    import cloudpickle

    processor: DataProcessor = cloudpickle.loads(
        previous if isinstance(previous, bytes) else previous.state
    )
    outcomes = []
    for item in inputs:
        # the parallel stage before: its error passes, its outputs go on
        if isinstance(item, _Outcome):
            outcomes.append(item if item.error is not None else _apply(processor, item.frames))
        else:
            outcomes.append(_apply(processor, [item]))
    return _Step(cloudpickle.dumps(processor), outcomes)


def _outcomes_of(step: _Step) -> list[_Outcome]:
    return step.outcomes


def _state_of(step: _Step) -> bytes:
    return step.state


def _flush_ordered(previous: bytes | _Step) -> _Outcome:
    import cloudpickle

    processor: DataProcessor = cloudpickle.loads(
        previous if isinstance(previous, bytes) else previous.state
    )
    try:
        return _Outcome(processor.flush())
    except BaseException as error:
        return _Outcome.failed(error)


# --------------------------------------------------------------------------------- the client side
class _Pending:
    """The handler's handle on a batch of frames on the cluster: ``result()`` gives, per frame, its
    outputs or the exception the processor raised."""

    __slots__ = ("_future",)

    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self) -> list[list[Frame] | BaseException]:
        # let Dask forget the task once we have its result
        future, self._future = (
            self._future,
            None,
        )
        outcomes: list[_Outcome] = future.result()
        return [outcome.frames if outcome.error is None else outcome.error for outcome in outcomes]


class _PendingFlush:
    __slots__ = ("_future",)

    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self) -> list[Frame]:
        if self._future is None:
            return []
        future, self._future = self._future, None
        outcome: _Outcome = future.result()
        return outcome.unwrap()


def _runs_in_parallel(processor: DataProcessor) -> bool:
    """Stateless and holding nothing to flush."""
    return (
        not processor.stateful
        and processor.flush_function is None
        and type(processor).flush is DataProcessor.flush
    )


def _split(processor: DataProcessor) -> tuple[DataProcessor | None, DataProcessor | None]:
    """(the part that may run in parallel, the part that runs in order)."""
    if isinstance(processor, ProcessorChain):
        parts = processor.processors
        n = 0
        while n < len(parts) and _runs_in_parallel(parts[n]):
            n += 1
        head, tail = parts[:n], parts[n:]
        return (
            None if not head else head[0] if len(head) == 1 else ProcessorChain(head),
            None if not tail else tail[0] if len(tail) == 1 else ProcessorChain(tail),
        )
    return (processor, None) if _runs_in_parallel(processor) else (None, processor)


class DaskProcessor(DataProcessor):
    """Runs ``processor`` on a Dask cluster for a ``DataHandler`` (see the module's notes).

    ``cluster`` is a ``distributed.Client`` (used, never closed), a scheduler address, or a
    ``ProcessingLocation``/choice string (``parse_location``): then this object starts or connects
    and closes what it opened when the handler finishes (``close``). ``max_in_flight`` bounds the
    frames on the cluster at once (default: 8 per worker thread, at least 32; they also count in the
    handler's memory budget); frames already waiting when one is sent go with it, up to
    ``max_batch`` per task; ``checkpoint_every`` is how many frames a stateful chain runs before its
    state is fetched and the chain restarted from it; ``timeout`` bounds connecting and waiting for
    a worker. Settings the processor derives from the plan (``fit_to_plan``) must be set before the
    first frame.
    """

    pipelined = True

    def __init__(
        self,
        processor: DataProcessor | Callable[..., Any],
        cluster: Any = "cluster:2",
        *,
        max_in_flight: int | None = None,
        max_batch: int = 8,
        checkpoint_every: int = 64,
        timeout: float = 30.0,
    ) -> None:
        distributed = _distributed()
        if isinstance(processor, DaskProcessor):
            raise TypeError("This processor already runs on a Dask cluster")
        if not isinstance(processor, DataProcessor):
            processor = DataProcessor(processor)
        if max_in_flight is not None and (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be a whole number >= 1, got {max_in_flight!r}")
        for setting, value in (("max_batch", max_batch), ("checkpoint_every", checkpoint_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{setting} must be a whole number >= 1, got {value!r}")
        self.processor = processor
        super().__init__(processor.process_function, stateful=processor.stateful)
        self.stateful_declared = processor.stateful_declared
        self.checkpoint_every = checkpoint_every
        self._cluster: Any = None
        self._owns_client = False
        if isinstance(cluster, distributed.Client):
            self.client = cluster
            self.location = ProcessingLocation("scheduler", address=str(cluster.scheduler.address))
        else:
            self.location = parse_location(cluster)
            if self.location.kind == "local":
                raise ValueError(
                    f"DaskProcessor needs a cluster; {cluster!r} means this machine "
                    f"(use the processor itself, or run_processor_on)"
                )
            self.client = self._connect(distributed, self.location, timeout)
            self._owns_client = True
        try:
            if self._owns_client or not self.client.nthreads():
                self.client.wait_for_workers(1, timeout=timeout)
        except Exception as error:
            self.close()
            raise TimeoutError(
                f"{self.location} has no worker after {timeout} s; start one with "
                f"'dask worker {self.location.address or '<scheduler address>'}'"
            ) from error
        threads = sum(self.client.nthreads().values())
        self.max_in_flight = max_in_flight or max(32, 8 * threads)
        self.max_batch = min(max_batch, self.max_in_flight)
        self._parallel, self._ordered = _split(processor)
        self._started = False
        self._token = uuid.uuid4().hex[:12]
        self._parallel_future: Any = None
        self._previous: bytes | Any | None = (
            None  # the ordered chain's last state: bytes or a future
        )
        self._since_anchor = 0
        self._count = 0

    def _connect(self, distributed: Any, location: ProcessingLocation, timeout: float) -> Any:
        if location.kind == "local-cluster":
            self._cluster = start_local_cluster(location.workers)
            # results straight from the workers, not relayed by the scheduler: less
            # CPU here per frame
            return distributed.Client(self._cluster, set_as_default=False, direct_to_workers=True)
        try:
            return distributed.Client(location.address, timeout=timeout, set_as_default=False)
        except OSError as error:
            raise OSError(
                f"Cannot reach the Dask scheduler at {location.address} within {timeout} s: "
                f"{error}; start one with 'dask scheduler' and give its address (tcp://HOST:8786)"
            ) from error

    # ------------------------------------------------------------------ DataProcessor protocol
    def submit_batch(self, frames: list[Frame]) -> _Pending:
        """Send frames (in acquisition order) to the cluster as one task (or one per stage)."""
        import dask

        if not self._started:
            self._start()
        client = self.client
        self._count += 1
        key = f"exengine-{self._token}-{self._count}"
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GiB"}):
            stage: Any = None
            if self._parallel is not None:
                stage = client.submit(
                    _run_parallel, self._parallel_future, frames, key=f"{key}-parallel", pure=False
                )
                if self._ordered is None:
                    return _Pending(stage)
            # restart the chain from its state, fetched
            if self._since_anchor >= self.checkpoint_every:
                self._previous = client.submit(
                    _state_of, self._previous, key=f"{key}-state", pure=False
                ).result()
                self._since_anchor = 0
            step = client.submit(
                _run_ordered,
                self._previous,
                stage if stage is not None else frames,
                key=f"{key}-ordered",
                pure=False,
            )
            self._previous = step
            self._since_anchor += len(frames)
            return _Pending(client.submit(_outcomes_of, step, key=f"{key}-outcomes", pure=False))

    def submit_flush(self) -> _PendingFlush:
        """Flush the ordered part where its state is; ``result()`` gives what it still held."""
        if self._ordered is None:
            return _PendingFlush(None)
        if not self._started:
            self._start()
        return _PendingFlush(
            self.client.submit(
                _flush_ordered, self._previous, key=f"exengine-{self._token}-flush", pure=False
            )
        )

    def process(self, coords: DataCoordinates, data: Any, metadata: Any) -> list[Frame]:
        """One frame, synchronously (the handler uses ``submit_batch`` to keep many on the
        cluster)."""
        (result,) = self.submit_batch([(coords, data, metadata)]).result()
        if isinstance(result, BaseException):
            raise result
        return result

    def flush(self) -> list[Frame]:
        return self.submit_flush().result()

    def close(self) -> None:
        """Drop the state chain; close the client and the local cluster if this object opened
        them."""
        self._previous = self._parallel_future = None
        if self._owns_client:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None

    def check_plan(
        self, axis_sizes: Mapping[str, int | None], frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        return self.processor.check_plan(axis_sizes, frame_shape)

    def derive_from_plan(self, axis_sizes: Mapping[str, int | None]) -> None:
        if self._started:
            raise RuntimeError("Derive settings from the plan before the first frame is processed")
        self.processor.derive_from_plan(axis_sizes)
        self._parallel, self._ordered = _split(self.processor)

    def output_axes(self, axis_sizes: Mapping[str, int | None]) -> dict[str, int | None]:
        return self.processor.output_axes(axis_sizes)

    # --------------------------------------------------------------------------------- internals
    def _start(self) -> None:
        import cloudpickle

        if self._parallel is not None:
            # Computed from its pickled bytes, so that a lost copy can be recomputed,
            # and copied to every
            # worker, so that where it is does not pull every frame to one worker.
            future = self.client.submit(
                _load_processor,
                cloudpickle.dumps(self._parallel),
                key=f"exengine-{self._token}-processor",
                pure=False,
            )
            self.client.replicate([future])
            self._parallel_future = future
        if self._ordered is not None:
            self._previous = cloudpickle.dumps(self._ordered)
        self._started = True

    def __repr__(self) -> str:
        return f"DaskProcessor({self.processor!r} on {self.location})"

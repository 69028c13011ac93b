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
  A cluster lost for ``LOST_AFTER_S``: processing goes on here, in order, with one warning.
- **Overhead.** Frames already waiting when one is sent go with it as one task (up to ``max_batch``
  and 1/16 of the memory budget): a Dask task costs milliseconds, so a fast camera pays it per
  batch.

Needs the ``distributed`` extra (``pip install 'napari-exengine[distributed]'``) on this machine
and the workers, and on the workers the packages the processor's code comes from.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .dask_location import (
    ProcessingLocation,
    import_distributed,
    parse_location,
    reach_scheduler,
    start_local_cluster,
)
from .kernel.data_coords import DataCoordinates
from .kernel.data_processor import DataProcessor, Frame
from .processors import ProcessorChain

__all__ = [
    "ClusterLost",
    "DaskProcessor",
    "ProcessingLocation",
    "parse_location",
    "reach_scheduler",
    "run_processor_on",
    "start_local_cluster",
]

logger = logging.getLogger("exengine")

#: How long a cluster may have no worker, or its scheduler be unreachable, before it counts as lost
#: and processing goes on in this process.
LOST_AFTER_S = 5.0
#: How often a wait for the cluster looks at its health.
HEALTH_POLL_S = 0.5


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
    outputs or the exception the processor raised; when the cluster is lost meanwhile, the frames
    are processed in this process instead."""

    __slots__ = ("_frames", "_future", "_owner")

    def __init__(self, owner: DaskProcessor, future: Any, frames: list[Frame]) -> None:
        self._owner, self._future, self._frames = owner, future, frames

    def result(self) -> list[list[Frame] | BaseException]:
        # let Dask forget the task once we have its result
        future, self._future = self._future, None
        try:
            outcomes: list[_Outcome] = self._owner._wait(future)
        except ClusterLost:
            outcomes = self._owner._process_here(self._frames)
        return [outcome.frames if outcome.error is None else outcome.error for outcome in outcomes]


class _PendingFlush:
    __slots__ = ("_future", "_owner")

    def __init__(self, owner: DaskProcessor, future: Any) -> None:
        self._owner, self._future = owner, future

    def result(self) -> list[Frame]:
        if self._future is None:
            return self._owner._flush_here()
        future, self._future = self._future, None
        try:
            outcome: _Outcome = self._owner._wait(future)
        except ClusterLost:
            return self._owner._flush_here()
        return outcome.unwrap()


class _Here:
    """A batch to process in this process (the cluster was lost), when its result is asked for:
    the handler asks in acquisition order, which a stateful processor needs."""

    __slots__ = ("_frames", "_owner")

    def __init__(self, owner: DaskProcessor, frames: list[Frame]) -> None:
        self._owner, self._frames = owner, frames

    def result(self) -> list[list[Frame] | BaseException]:
        outcomes = self._owner._process_here(self._frames)
        return [o.frames if o.error is None else o.error for o in outcomes]


class ClusterLost(ConnectionError):
    """The Dask cluster went away (no worker, or no scheduler, for ``LOST_AFTER_S``)."""


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
        distributed = import_distributed()
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
        self._previous: bytes | Any | None = None  # the ordered chain's last state or future
        self._since_anchor = 0
        self._count = 0
        self._anchor: bytes | None = None  # the ordered chain's last state known here
        self._here: DataProcessor | None = None  # processes here once the cluster is lost
        self._unwell_since: float | None = None
        self._lock = threading.Lock()

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
    def submit_batch(self, frames: list[Frame]) -> _Pending | _Here:
        """Send frames (in acquisition order) to the cluster as one task (or one per stage); once
        the cluster is lost, process them here."""
        if self._here is None:
            try:
                return self._submit(frames)
            except ClusterLost:
                pass
            except Exception as error:  # the cluster refuses work: it is going away
                self._lose(f"{type(error).__name__}: {error}"[:200])
        return _Here(self, frames)

    def _submit(self, frames: list[Frame]) -> _Pending | _Here:
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
                    return _Pending(self, stage, frames)
            # restart the chain from its state, fetched
            if self._since_anchor >= self.checkpoint_every:
                self._previous = self._anchor = self._wait(
                    client.submit(_state_of, self._previous, key=f"{key}-state", pure=False)
                )
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
            outcomes = client.submit(_outcomes_of, step, key=f"{key}-outcomes", pure=False)
            return _Pending(self, outcomes, frames)

    def submit_flush(self) -> _PendingFlush:
        """Flush the ordered part where its state is; ``result()`` gives what it still held."""
        if self._ordered is None or self._here is not None:
            return _PendingFlush(self, None)
        try:
            if not self._started:
                self._start()
            future = self.client.submit(
                _flush_ordered, self._previous, key=f"exengine-{self._token}-flush", pure=False
            )
        except Exception as error:  # the cluster refuses work: it is going away
            self._lose(f"{type(error).__name__}: {error}"[:200])
            return _PendingFlush(self, None)
        return _PendingFlush(self, future)

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
            self.client.close(timeout=LOST_AFTER_S)
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
            self._call(lambda: self.client.replicate([future]))
            self._parallel_future = future
        if self._ordered is not None:
            self._previous = self._anchor = cloudpickle.dumps(self._ordered)
        self._started = True

    # ------------------------------------------------------------------- losing the cluster
    def _wait(self, future: Any) -> Any:
        """``future``'s result; ``ClusterLost`` when the cluster is lost meanwhile (or was)."""
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        return self._await(done, future.result)

    def _call(self, function: Callable[[], Any]) -> Any:
        """``function()`` (a blocking call to the cluster), given up with ``ClusterLost`` when the
        cluster is lost meanwhile."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = function()
            except BaseException as error:
                box["error"] = error
            finally:
                done.set()

        threading.Thread(target=call, name="exengine-dask-call", daemon=True).start()

        def get() -> Any:
            if "error" in box:
                raise box["error"]
            return box.get("value")

        return self._await(done, get)

    def _await(self, done: threading.Event, get: Callable[[], Any]) -> Any:
        while self._here is None:
            if done.wait(HEALTH_POLL_S):
                try:
                    return get()
                except Exception as error:  # tasks never raise: the cluster failed them
                    reason: str | None = f"{type(error).__name__}: {error}"[:200]
            else:
                reason = self._lost_because()
            if reason is not None:
                self._lose(reason)
        raise ClusterLost(str(self.location))

    def _lost_because(self) -> str | None:
        """Why the cluster counts as lost (no worker, or no scheduler, for ``LOST_AFTER_S``), or
        ``None``."""
        status = str(getattr(self.client, "status", "running"))
        workers = 0
        if status == "running":
            answered = threading.Event()
            info: dict[str, Any] = {}

            def ask() -> None:
                with contextlib.suppress(Exception):
                    info.update(self.client.scheduler_info(n_workers=1))
                answered.set()

            threading.Thread(target=ask, name="exengine-dask-health", daemon=True).start()
            if answered.wait(LOST_AFTER_S / 2):
                workers = int(info.get("n_workers", len(info.get("workers", {}))))
        if workers:
            self._unwell_since = None
            return None
        now = time.monotonic()
        self._unwell_since = self._unwell_since or now
        if now - self._unwell_since < LOST_AFTER_S:
            return None
        return "no worker" if status == "running" else "no scheduler"

    def _lose(self, reason: str) -> None:
        """Go on in this process: the parallel part as it is, the ordered part from its last state
        known here (its checkpoint, at most ``checkpoint_every`` frames back)."""
        import cloudpickle

        with self._lock:
            if self._here is not None:
                return
            parts = [self._parallel] if self._parallel is not None else []
            if self._ordered is not None:
                parts.append(cloudpickle.loads(self._anchor or cloudpickle.dumps(self._ordered)))
            stateful = (
                f"; {self._ordered!r} goes on from its state of up to {self.checkpoint_every} "
                "frames ago"
                if self._ordered is not None
                else ""
            )
            logger.warning(
                "Lost %s (%s): processing goes on in this process%s",
                self.location,
                reason,
                stateful,
            )
            self._here = parts[0] if len(parts) == 1 else ProcessorChain(parts)

    def _process_here(self, frames: list[Frame]) -> list[_Outcome]:
        assert self._here is not None
        with self._lock:
            return [_apply(self._here, [frame]) for frame in frames]

    def _flush_here(self) -> list[Frame]:
        if self._here is None or self._ordered is None:
            return []
        with self._lock:
            return self._here.flush()

    def __repr__(self) -> str:
        return f"DaskProcessor({self.processor!r} on {self.location})"

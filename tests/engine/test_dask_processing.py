"""Processors on a real Dask cluster (worker processes started here): same results as locally,
within the memory budget, failures reported, and no frame lost when a worker process is killed
mid-run."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from exengine.base_classes import DataProducing, ExecutorEvent
from exengine.data import DataHandler, DataHandlerError, DataProcessor
from exengine.processors import (
    ProcessorChain,
    background_subtraction,
    frame_averaging,
    max_intensity_projection,
)
from exengine.storage import NDRAMStorage, NDTiffStorage
from seed_processors import batch_process, multi_output_process, process_function

distributed = pytest.importorskip("distributed")
from exengine.dask_processing import (  # noqa: E402
    DaskProcessor,
    ProcessingLocation,
    parse_location,
    run_processor_on,
    start_local_cluster,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, like the benchmark's cluster."""
    cluster = start_local_cluster(2)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(autouse=True)
def fresh_batch_process():
    """The seed's batch_process keeps its images on the function itself: leave none behind."""
    vars(batch_process).pop("images", None)
    yield
    vars(batch_process).pop("images", None)


def frames(times=5, planes=3, shape=(24, 32)):
    rng = np.random.default_rng(7)
    return [
        (
            {"time": t, "z": z},
            rng.integers(0, 4000, shape, dtype=np.uint16),
            {"t": t, "z": z, "Channel": "DAPI"},
        )
        for t in range(times)
        for z in range(planes)
    ]


def run(processor, inputs, storage=None, budget=None):
    handler = DataHandler(
        storage if storage is not None else NDRAMStorage(),
        processor,
        **({"memory_budget_bytes": budget} if budget else {}),
    )
    for coords, data, metadata in inputs:
        handler.put(coords, data.copy(), dict(metadata), timeout=60)
    handler.await_completion(120)
    return handler


def assert_same_dataset(local, remote):
    coordinates = local.get_coordinates_list()
    assert coordinates, "the local run stored nothing to compare"
    # same frames, in the same (acquisition) order
    assert remote.get_coordinates_list() == coordinates
    for coords in coordinates:
        np.testing.assert_array_equal(remote.get_data(coords), local.get_data(coords))
        assert remote.get_data(coords).dtype == local.get_data(coords).dtype
        assert remote.get_metadata(coords) == local.get_metadata(coords)


def slow(coords, data, metadata):
    time.sleep(0.03)
    return coords, data, metadata


def fft_filter(coords, data, metadata):
    spectrum = np.fft.rfft2(data)
    spectrum[8:, :] *= 0.5
    return (
        coords,
        np.clip(np.fft.irfft2(spectrum, data.shape), 0, 65535).astype(np.uint16),
        dict(metadata, fft=1),
    )


class Counter(DataProcessor):
    """Stateful: numbers the frames in the order it sees them."""

    def __init__(self):
        self.seen = 0
        super().__init__(self._count, stateful=True)

    def _count(self, coords, data, metadata):
        self.seen += 1
        time.sleep(0.002)
        return coords, data, dict(metadata, order=self.seen)


PROCESSORS = {
    "seed process_function": lambda: process_function,
    "seed multi_output_process": lambda: multi_output_process,
    "seed batch_process": lambda: (vars(batch_process).pop("images", None), batch_process)[1],
    "stateless builtin": lambda: background_subtraction(level=100),
    "stateless fft": lambda: DataProcessor(fft_filter, stateful=False),
    "frame averaging, last one partial": lambda: frame_averaging(frames=2),
    "projection at flush": lambda: max_intensity_projection(),
    "chain stateless then stateful": lambda: ProcessorChain(
        [
            background_subtraction(level=50),
            DataProcessor(fft_filter, stateful=False),
            max_intensity_projection(z_planes=3),
            frame_averaging(frames=2),
        ]
    ),
    "stateful counter": Counter,
}


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_a_dask_run_stores_the_same_frames_as_a_local_run(client, name):
    inputs = frames()
    local = run(PROCESSORS[name](), inputs).storage
    remote = run(DaskProcessor(PROCESSORS[name](), client, max_in_flight=6), inputs).storage
    assert_same_dataset(local, remote)


def test_the_same_dataset_on_disk_with_a_contributed_processor(client, tmp_path):
    from napari_exengine.contributions import build_processor

    inputs = frames(times=3, planes=2)
    local = run(
        build_processor("exengine-denoise.gaussian", sigma=1.5),
        inputs,
        NDTiffStorage(tmp_path / "a", "run"),
    )
    remote = run(
        DaskProcessor(build_processor("exengine-denoise.gaussian", sigma=1.5), client),
        inputs,
        NDTiffStorage(tmp_path / "b", "run"),
    )
    assert_same_dataset(local.storage, remote.storage)
    assert remote.storage.get_metadata({"time": 2, "z": 1})["Denoise"] == "gaussian sigma=1.5"


def worker_pids(client):
    return client.run(os.getpid)


def test_stateless_frames_spread_over_the_workers_and_stateful_ones_run_in_order(client):
    def pid_of(coords, data, metadata):
        time.sleep(0.02)
        return coords, data, dict(metadata, pid=os.getpid())

    workers = set(worker_pids(client).values())
    seen_pids = set()
    for _ in range(3):  # the scheduler places tasks as it sees fit: a busy machine may favour one
        handler = run(
            DaskProcessor(DataProcessor(pid_of, stateful=False), client),
            frames(times=8, planes=2),
        )
        storage = handler.storage
        seen_pids |= {storage.get_metadata(c)["pid"] for c in storage.get_coordinates_list()}
        if seen_pids == workers:
            break
    assert seen_pids == workers
    counted = run(
        DaskProcessor(Counter(), client, max_in_flight=8), frames(times=10, planes=2)
    ).storage
    orders = [counted.get_metadata(c)["order"] for c in counted.get_coordinates_list()]
    assert orders == list(range(1, 21))


def test_frames_on_the_cluster_count_in_the_budget_and_a_slow_cluster_slows_the_producer(client):
    inputs = frames(times=20, planes=1, shape=(64, 64))
    frame_bytes = inputs[0][1].nbytes
    budget = 4 * frame_bytes
    to_float = DataProcessor(
        lambda c, d, m: (time.sleep(0.05), (c, d.astype(np.float64), m))[1], stateful=False
    )
    handler = DataHandler(
        NDRAMStorage(),
        DaskProcessor(to_float, client, max_in_flight=16),
        memory_budget_bytes=budget,
    )
    start = time.monotonic()
    for coords, data, metadata in inputs:
        handler.put(coords, data, metadata, timeout=60)
        assert handler.bytes_in_flight <= budget + 4 * frame_bytes
    put_time = time.monotonic() - start
    handler.await_completion(120)
    # the budget plus one frame's outputs
    assert handler.peak_bytes_in_flight <= budget + 4 * frame_bytes
    assert handler.frames_stored == 20
    # 20 frames of 50 ms on two workers, at most ~4 on the cluster at once: puts waited for
    # the cluster
    assert put_time > (20 - 4) * 0.05 / 2 * 0.8


class Producer(DataProducing, ExecutorEvent):
    def __init__(self, inputs, data_handler):
        super().__init__(
            data_coordinates_iterator=[c for c, _, _ in inputs], data_handler=data_handler
        )
        self.inputs = inputs

    def execute(self):
        for coords, data, metadata in self.inputs:
            self.put_data(coords, data, metadata)
            time.sleep(0.01)


def raises_at_time_2(coords, data, metadata):
    if coords["time"] == 2:
        raise ValueError(f"bad pixel map at {dict(coords)}")
    return coords, data, metadata


@pytest.mark.parametrize("stateful", [False, True])
def test_a_processor_raising_on_a_worker_fails_like_locally(client, engine, stateful):
    inputs = frames(times=4, planes=1)
    handler = DataHandler(
        NDRAMStorage(), DaskProcessor(DataProcessor(raises_at_time_2, stateful=stateful), client)
    )
    future = engine.submit(Producer(inputs, handler))
    # raises here, or once the failure comes back
    with contextlib.suppress(ValueError, DataHandlerError):
        future.await_execution(60)
    with pytest.raises(DataHandlerError, match="bad pixel map"):
        handler.await_completion(60)
    with pytest.raises(
        (ValueError, DataHandlerError), match=r"bad pixel map at \{'time': 2, 'z': 0\}"
    ):
        future.await_execution(60)
    assert isinstance(handler.error, ValueError)
    np.testing.assert_array_equal(
        handler.get({"time": 2, "z": 0}, return_metadata=False), inputs[2][1]
    )
    assert {"time": 1, "z": 0} in handler.storage and {"time": 2, "z": 0} not in handler.storage


def exits(coords, data, metadata):
    sys.exit(3)


def test_system_exit_on_a_worker_is_a_recorded_failure(client):
    handler = DataHandler(
        NDRAMStorage(), DaskProcessor(DataProcessor(exits, stateful=False), client)
    )
    handler.put({"time": 0}, np.zeros((4, 4), np.uint16), {})
    with pytest.raises(DataHandlerError, match="SystemExit"):
        handler.await_completion(60)
    assert set(worker_pids(client)) == set(client.nthreads())  # the workers live on


@pytest.mark.parametrize(
    "make",
    [
        lambda: DataProcessor(slow, stateful=False),
        lambda: ProcessorChain([DataProcessor(slow, stateful=True), frame_averaging(3)]),
    ],
    ids=["stateless", "stateful"],
)
def test_a_worker_killed_mid_run_loses_no_frame(client, make):
    inputs = frames(times=30, planes=1, shape=(32, 32))
    expected = run(make(), inputs).storage
    processor = DaskProcessor(make(), client, max_in_flight=4, checkpoint_every=8)
    handler = DataHandler(NDRAMStorage(), processor)
    pids = worker_pids(client)
    killed = threading.Event()

    def kill_a_busy_worker():
        previous, holders = processor._previous, ()
        # the worker holding the chain's state
        if previous is not None and not isinstance(previous, bytes):
            holders = client.who_has([previous]).get(previous.key) or ()
        if not holders:
            holders = [worker for worker, keys in client.processing().items() if keys]
        os.kill(pids[next(iter(holders), next(iter(pids)))], signal.SIGKILL)
        killed.set()

    def on_stage(stage, coords):
        if stage == "stored" and handler.frames_stored == 3:  # mid-run, once
            threading.Thread(target=kill_a_busy_worker).start()

    handler.add_listener(on_stage)
    for coords, data, metadata in inputs:
        handler.put(coords, data.copy(), dict(metadata), timeout=60)
    handler.await_completion(180)
    assert killed.is_set()
    assert_same_dataset(expected, handler.storage)
    deadline = time.monotonic() + 120
    # the nanny restarts the killed worker
    while (
        set(worker_pids(client).values()) & set(pids.values()) == set(pids.values())
        or len(client.nthreads()) < 2
    ):
        assert time.monotonic() < deadline, "the killed worker did not come back"
        time.sleep(0.2)


def test_choosing_where_processors_run():
    assert (
        parse_location(None)
        == parse_location("local")
        == parse_location("this machine")
        == ProcessingLocation()
    )
    assert parse_location("cluster:4") == ProcessingLocation("local-cluster", workers=4)
    assert parse_location("cluster").workers == 2
    assert parse_location("tcp://10.0.0.5:8786") == ProcessingLocation(
        "scheduler", address="tcp://10.0.0.5:8786"
    )
    assert parse_location("scheduler.lab:8786").address == "tcp://scheduler.lab:8786"
    assert str(parse_location("cluster:3")) == "a local Dask cluster of 3 worker processes"
    for bad in ("cluster:0", "cluster:two", "somewhere", "tcp://host", 3):
        with pytest.raises(ValueError, match=r"cluster:(N|4).*got"):
            parse_location(bad)
    processor = background_subtraction()
    assert (
        run_processor_on(processor, "local") is processor
        and run_processor_on(None, "cluster:2") is None
    )
    with pytest.raises(OSError, match=r"Cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskProcessor(processor, "tcp://127.0.0.1:9", timeout=1)


def test_a_local_cluster_of_its_own_is_started_and_closed_with_the_handler():
    processor = run_processor_on(frame_averaging(frames=2), "cluster:1")
    assert (
        isinstance(processor, DaskProcessor)
        and processor.max_in_flight == 32
        and processor.max_batch == 8
    )
    cluster = processor._cluster
    handler = run(processor, frames(times=3, planes=1))
    assert handler.storage.get_coordinates_list() == [{"time": 0, "z": 0}, {"time": 1, "z": 0}]
    assert handler.storage.get_metadata({"time": 1, "z": 0})["Partial"] is True
    assert processor.client.status == "closed" and cluster.status.name == "closed"


def malloc_settings():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_MMAP_THRESHOLD_")


def profiler_enabled():
    import dask

    return dask.config.get("distributed.worker.profile.enabled")


def test_the_workers_of_local_clusters_reuse_freed_memory_and_do_not_sample_their_tasks(client):
    """Dask's MALLOC_TRIM_THRESHOLD_=65536 made every frame-sized array a fresh mmap (page faults),
    and its profiler interrupted the tasks every 10 ms."""
    assert set(client.run(malloc_settings).values()) == {
        (str(128 * 1024 * 1024), str(64 * 1024 * 1024))
    }
    assert set(client.run(profiler_enabled).values()) == {False}


def test_the_missing_extra_is_named(monkeypatch):
    import exengine.dask_processing as dask_processing

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(
        ImportError, match=r"'distributed' extra: pip install 'napari-exengine\[distributed\]'"
    ):
        dask_processing.DaskProcessor(background_subtraction(), "cluster:1")


@pytest.fixture
def own_cluster():
    """A scheduler and two workers (no nannies) as processes of their own, to be killed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"tcp://127.0.0.1:{port}"
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"]
    workers = [
        subprocess.Popen(
            [*worker, "--no-nanny", "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        yield SimpleNamespace(address=address, scheduler=scheduler, workers=workers)
    finally:
        for process in [scheduler, *workers]:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize("lost", ["workers", "scheduler"])
@pytest.mark.parametrize("name", ["stateless builtin", "stateful counter"])
def test_a_cluster_lost_mid_run_goes_on_in_this_process_and_loses_no_frame(
    own_cluster, lost, name, caplog
):
    """Every worker, or the scheduler, killed mid-run: within seconds the frames on the cluster and
    those after are processed here, once, in order; one warning says so."""
    make = PROCESSORS[name]
    inputs = frames(times=60, planes=1, shape=(32, 32))
    processor = DaskProcessor(make(), own_cluster.address, max_in_flight=4, checkpoint_every=8)
    handler = DataHandler(NDRAMStorage(), processor)
    for coords, data, metadata in inputs[:20]:
        handler.put(coords, data.copy(), dict(metadata), timeout=60)
    victims = own_cluster.workers if lost == "workers" else [own_cluster.scheduler]
    for process in victims:
        process.send_signal(signal.SIGKILL)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="exengine"):
        for coords, data, metadata in inputs[20:]:
            handler.put(coords, data.copy(), dict(metadata), timeout=60)
        handler.await_completion(60)
    assert time.monotonic() - started < 30
    stored = handler.storage.get_coordinates_list()
    assert [c["time"] for c in stored] == list(range(60))  # none lost, none twice, in order
    lost_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lost ")]
    assert len(lost_lines) == 1 and "processing goes on in this process" in lost_lines[0]
    if name == "stateful counter":
        orders = [handler.storage.get_metadata(c)["order"] for c in stored]
        assert orders == sorted(orders)  # in acquisition order, also after the loss

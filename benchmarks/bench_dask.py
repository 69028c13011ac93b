"""Processors on a 2-worker Dask ``LocalCluster`` against the same processors in-process.

Run: ``python benchmarks/bench_dask.py``. Frames of 512x512 uint16 go through a ``DataHandler`` into
NDRAM storage, timed from the first ``put`` to ``await_completion``; runs alternate between
in-process and the cluster, and the figures are medians. Two processors:

1. CPU-heavy: an FFT band-pass filter repeated to take about 20 ms per frame (calibrated at start);
2. trivial: the identity, so the figure is the cost of the hop to the cluster and back.

The cluster (2 worker processes of 1 thread, ``start_local_cluster``) is started once, before
timing. As a control, each run also times the filter alone in two plain processes at once against
one: the parallelism the shared machine really gives at that moment, the ceiling of the cluster's
ratio.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from _common import report
from exengine.data import DataHandler, DataProcessor
from exengine.storage import NDRAMStorage

RUNS = 5
HEAVY_FRAMES = 100
TRIVIAL_FRAMES = 400
SHAPE = (512, 512)
TARGET_MS = 20.0


def band_pass(rounds: int) -> DataProcessor:
    """A stateless FFT band-pass filter applied ``rounds`` times (same dtype out)."""
    ky = np.fft.fftfreq(SHAPE[0])[:, None]
    kx = np.fft.rfftfreq(SHAPE[1])[None, :]
    radius2 = kx**2 + ky**2
    kernel = np.exp(-radius2 * 400) - np.exp(-radius2 * 4000)

    def fft_band_pass(coords: Any, data: np.ndarray, metadata: Any) -> Any:
        values = data.astype(np.float64)
        for _ in range(rounds):
            values = np.fft.irfft2(np.fft.rfft2(values) * kernel, SHAPE)
        out = np.clip(np.rint(values + 100), 0, 65535).astype(data.dtype)
        return coords, out, dict(metadata or {}, Filter=f"FFT band-pass x{rounds}")

    return DataProcessor(fft_band_pass, stateful=False)


def identity(coords: Any, data: np.ndarray, metadata: Any) -> Any:
    return coords, data, metadata


def calibrate() -> tuple[int, float]:
    """Rounds of the band-pass for about ``TARGET_MS`` of CPU per frame, and the CPU ms per frame
    (CPU time, not wall time: the shared machine's load must not change the work)."""
    frame = np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16)

    def cpu_ms(function: Any) -> float:
        function({}, frame, {})
        times = []
        for _ in range(10):
            start = time.thread_time()
            function({}, frame, {})
            times.append((time.thread_time() - start) * 1e3)
        return statistics.median(times)

    # the conversions around the rounds cost a share of their own: fit both, then take the
    # fewest rounds
    # that reach 90% of the target (rounding to the nearest count gave 15 ms as often as 20)
    one, four = cpu_ms(band_pass(1).process_function), cpu_ms(band_pass(4).process_function)
    per_round = max((four - one) / 3, 1e-3)
    rounds = max(1, math.ceil((0.9 * TARGET_MS - (one - per_round)) / per_round))
    return rounds, cpu_ms(band_pass(rounds).process_function)


def frames_per_s(
    processor: DataProcessor,
    pool: list[np.ndarray],
    n: int,
    cpu: dict[str, list[float]] | None = None,
    processes: Sequence[Any] = (),
) -> float:
    """Frames/s through a handler; with ``cpu``, appends the CPU ms per frame of this process
    ("here") and of the other ``processes`` (psutil, the cluster's workers) together ("workers")."""
    before = [_cpu_s(process) for process in (psutil.Process(), *processes)]
    handler = DataHandler(NDRAMStorage(), processor)
    start = time.perf_counter()
    for t in range(n):
        handler.put({"time": t}, pool[t % len(pool)], {"t": t})
    handler.await_completion(600)
    elapsed = time.perf_counter() - start
    assert handler.frames_stored == n, (handler.frames_stored, n)
    if cpu is not None:
        used = [
            _cpu_s(process) - b
            for process, b in zip((psutil.Process(), *processes), before, strict=True)
        ]
        cpu["here"].append(used[0] / n * 1e3)
        cpu["workers"].append(sum(used[1:]) / n * 1e3)
    return n / elapsed


def _cpu_s(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _filter_alone(rounds: int, n: int, ready: Any, start: Any) -> None:
    frame = np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16)
    heavy = band_pass(rounds).process_function
    heavy({}, frame, {})
    ready.put(True)
    start.wait()
    for _ in range(n):
        heavy({}, frame, {})


def plain_processes(rounds: int, processes: int, n: int = 40) -> float:
    """Frames/s of the filter alone in ``processes`` plain processes at once (``n`` frames each)."""
    context = multiprocessing.get_context("spawn")
    ready, start = context.Queue(), context.Event()
    workers = [
        context.Process(target=_filter_alone, args=(rounds, n, ready, start))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)  # imported and warmed up
    began = time.perf_counter()
    start.set()
    for worker in workers:
        worker.join(600)
    return processes * n / (time.perf_counter() - began)


def main() -> None:
    from exengine.dask_processing import DaskProcessor, start_local_cluster

    rounds, ms = calibrate()
    print(
        f"band-pass: {rounds} FFT round(s) per frame, {ms:.1f} ms of CPU per 512x512 frame "
        "in-process"
    )
    rng = np.random.default_rng(1)
    pool = [rng.integers(0, 4000, SHAPE, dtype=np.uint16) for _ in range(16)]
    import distributed

    cluster = start_local_cluster(2)
    # as cluster:2 does
    client = distributed.Client(cluster, set_as_default=False, direct_to_workers=True)
    try:
        client.wait_for_workers(2, timeout=120)
        heavy = band_pass(rounds)
        trivial = DataProcessor(identity, stateful=False)
        workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        names = ("heavy local", "heavy dask", "trivial local", "trivial dask")
        runs: dict[str, list[float]] = {name: [] for name in (*names, "1 process", "2 processes")}
        cpu: dict[str, dict[str, list[float]]] = {
            name: {"here": [], "workers": []} for name in names
        }
        # warm up the workers (imports, first tasks)
        frames_per_s(DaskProcessor(heavy, client), pool, 20)
        frames_per_s(DaskProcessor(trivial, client), pool, 50)
        load = []
        for _ in range(RUNS):  # interleaved, so that the shared machine's load affects both alike
            load.append(os.getloadavg()[0])
            for name, processor, n in (
                ("heavy local", heavy, HEAVY_FRAMES),
                ("heavy dask", DaskProcessor(heavy, client), HEAVY_FRAMES),
                ("trivial local", trivial, TRIVIAL_FRAMES),
                ("trivial dask", DaskProcessor(trivial, client), TRIVIAL_FRAMES),
            ):
                runs[name].append(frames_per_s(processor, pool, n, cpu[name], workers))
            runs["1 process"].append(plain_processes(rounds, 1))
            runs["2 processes"].append(plain_processes(rounds, 2))
    finally:
        client.close()
        cluster.close()
    print(f"load average (1 min) at each run: {' '.join(f'{v:.1f}' for v in load)}")
    for name, values in runs.items():
        print(f"{name:14} " + " ".join(f"{v:9.1f}" for v in values) + " frames/s")
    for name in names:
        print(
            f"{name:14} CPU ms per frame: this process {statistics.median(cpu[name]['here']):.2f}, "
            f"workers {statistics.median(cpu[name]['workers']):.2f}"
        )
    median = {name: statistics.median(values) for name, values in runs.items()}
    report(
        [
            (
                f"FFT band-pass ~{ms:.0f} ms/frame, 2 Dask workers (frames/s)",
                median["heavy dask"],
                "in-process",
                median["heavy local"],
                "",
            ),
            (
                "identity processor via Dask (frames/s)",
                median["trivial dask"],
                "in-process",
                median["trivial local"],
                "",
            ),
            (
                "control: the filter alone in 2 processes (frames/s)",
                median["2 processes"],
                "in 1 process",
                median["1 process"],
                "",
            ),
        ]
    )
    cluster_cpu = statistics.median(cpu["heavy dask"]["here"]) + statistics.median(
        cpu["heavy dask"]["workers"]
    )
    local_cpu = statistics.median(cpu["heavy local"]["here"])  # (the idle workers would not exist)
    print(
        f"CPU per frame of the heavy filter: {cluster_cpu:.1f} ms with the cluster, "
        f"{local_cpu:.1f} ms in-process; "
        f"with 2 free cores the cluster would reach {2 * local_cpu / cluster_cpu:.2f}x"
    )


if __name__ == "__main__":
    main()

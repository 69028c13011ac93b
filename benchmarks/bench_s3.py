"""OME-Zarr to an S3 server on this machine vs OME-Zarr to a local folder, for zarr's obstore- and
fsspec-based stores; the server's own ceiling; peak memory while writing to S3.

Run: ``python benchmarks/bench_s3.py [--pin]``. The server is moto's S3 server in its own process
(as a real one would be), on 127.0.0.1; with ``--pin`` it has a core of its own, as on its own
machine. 1,000 frames of 512x512 uint16 (time x channel) go through a ``DataHandler`` with a 64 MB
memory budget; each frame is a fresh array, as a camera's are, so frames queued in memory would show
in the RSS. Medians of interleaved runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import psutil

from _common import scratch_dir
from exengine.data import DataHandler
from exengine.storage import OMEZarrStorage
from exengine.storage.omezarr import DEFAULT_WRITES_IN_FLIGHT

FRAMES = 1000
SHAPE = (512, 512)
RUNS = 3
BUDGET = 64 * 1024**2
BUCKET = "bench"


def start_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process; returns it and its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return server, endpoint
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto's S3 server did not start within 30 s") from None
            time.sleep(0.2)


class PeakRSS:
    """Samples this process's RSS every 5 ms while active: ``start``, ``peak`` and ``end`` in MB."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = self.end = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> float:
        return self._process.memory_info().rss / 1024**2

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.end = self._rss()
        self.peak = max(self.peak, self.end)


def frames(n: int):
    pool = [np.random.default_rng(i).integers(0, 4000, SHAPE, dtype=np.uint16) for i in range(8)]
    for i in range(n):
        # a fresh frame
        yield (
            {"time": i // 2, "channel": ("DAPI", "GFP")[i % 2]},
            pool[i % 8].copy(),
        )


def through_handler(storage: OMEZarrStorage, n: int = FRAMES) -> float:
    """Frames/s of ``n`` frames put through a DataHandler into ``storage`` until all are stored."""
    handler = DataHandler(storage, memory_budget_bytes=BUDGET)
    start = time.perf_counter()
    for i, (coords, data) in enumerate(frames(n)):
        handler.put(coords, data, {"i": i})
    handler.await_completion(600)
    return n / (time.perf_counter() - start)


def raw_puts(endpoint: str, concurrency: int, n: int = FRAMES) -> float:
    """PUTs/s of the frame-sized objects straight through obstore, ``concurrency`` at a time: the
    server's ceiling."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET, prefix=f"raw{concurrency}", endpoint=endpoint, client_options={"allow_http": True}
    )
    payload = np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16).tobytes()

    async def run() -> None:
        limit = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with limit:
                await obstore.put_async(store, f"{i}", payload)

        await asyncio.gather(*(one(i) for i in range(n)))

    start = time.perf_counter()
    asyncio.run(run())
    return n / (time.perf_counter() - start)


def pin(server: subprocess.Popen) -> None:
    """The server on the last core, this process on the others: as if it ran on its own machine, so
    that its rate is the ceiling and this process only has to keep up."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--pin needs at least 2 cores")
    for process, allowed in (
        (psutil.Process(server.pid), {cores[-1]}),
        (psutil.Process(), set(cores[:-1])),
    ):
        for thread in process.threads():
            with contextlib.suppress(OSError):  # a thread that has ended
                os.sched_setaffinity(thread.id, allowed)


def main() -> None:
    server, endpoint = start_server()
    if "--pin" in sys.argv[1:]:
        pin(server)
        print("the server pinned to one core, this process to the others")
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    root = scratch_dir()
    runs: dict[str, list[float]] = {
        k: [] for k in ("folder", "obstore", "obstore1", "fsspec", "raw1", "raw4", "raw8")
    }
    memory: dict[str, list[PeakRSS]] = {"obstore": [], "fsspec": []}
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10
        ).close()
        through_handler(OMEZarrStorage(f"s3://{BUCKET}/warmup", "w"), 20)  # imports and connections
        through_handler(OMEZarrStorage(f"s3://{BUCKET}/warmup", "w", store="fsspec"), 20)
        for _ in range(RUNS):  # interleaved, so drift of the shared machine affects all alike
            storage = OMEZarrStorage(root, "zarr")
            runs["folder"].append(through_handler(storage))
            shutil.rmtree(storage.path)
            for kind in ("obstore", "fsspec"):
                with PeakRSS() as rss:
                    runs[kind].append(
                        through_handler(OMEZarrStorage(f"s3://{BUCKET}/{kind}", "run", store=kind))
                    )
                memory[kind].append(rss)
            runs["obstore1"].append(
                through_handler(OMEZarrStorage(f"s3://{BUCKET}/one", "run", writes_in_flight=1))
            )
            for concurrency in (1, 4, 8):
                runs[f"raw{concurrency}"].append(raw_puts(endpoint, concurrency))
        with PeakRSS() as longer:  # twice the frames: the peak stays where the budget puts it
            through_handler(OMEZarrStorage(f"s3://{BUCKET}/longer", "run"), 2 * FRAMES)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        server.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
    rate = {k: statistics.median(v) for k, v in runs.items()}
    mb = FRAMES * np.prod(SHAPE) * 2 / 1024**2
    print(
        f"{FRAMES} frames of {SHAPE[0]}x{SHAPE[1]} uint16 ({mb:.0f} MB), DataHandler budget "
        f"{BUDGET // 1024**2} MB, median of {RUNS}"
    )
    print(
        f"{'path':58} {'frames/s':>9} {'MB/s':>7} {'/ folder':>9} {'/ server 1':>11} "
        f"{'/ server 4':>11} {'/ server 8':>11}"
    )
    for key, label in (
        ("folder", "OME-Zarr to a local folder (RAM)"),
        ("obstore", f"OME-Zarr to S3, ObjectStore (obstore), {DEFAULT_WRITES_IN_FLIGHT} in flight"),
        ("obstore1", "the same, 1 frame in flight"),
        ("fsspec", f"OME-Zarr to S3, FsspecStore (s3fs), {DEFAULT_WRITES_IN_FLIGHT} in flight"),
        ("raw1", "server ceiling: raw PUTs, 1 in flight"),
        ("raw4", "server ceiling: raw PUTs, 4 in flight"),
        ("raw8", "server ceiling: raw PUTs, 8 in flight"),
    ):
        r = rate[key]
        print(
            f"{label:58} {r:9.0f} {r * mb / FRAMES:7.1f} {r / rate['folder']:9.3f} "
            f"{r / rate['raw1']:11.2f} "
            f"{r / rate['raw4']:11.2f} {r / rate['raw8']:11.2f}"
        )
    print(f"obstore / fsspec: {rate['obstore'] / rate['fsspec']:.2f}")
    for kind, samples in memory.items():
        growth = statistics.median(s.peak - s.start for s in samples)
        left = statistics.median(s.end - s.start for s in samples)
        print(
            f"RSS during the S3 run ({kind}): start "
            f"{statistics.median(s.start for s in samples):.0f} MB, peak +{growth:.0f} MB, end "
            f"+{left:.0f} MB (data written {mb:.0f} MB, budget {BUDGET // 1024**2} MB)"
        )
    print(
        f"RSS during a run of {2 * FRAMES} frames ({2 * mb:.0f} MB, obstore): "
        f"peak +{longer.peak - longer.start:.0f} MB, end +{longer.end - longer.start:.0f} MB"
    )


if __name__ == "__main__":
    main()

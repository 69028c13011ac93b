"""Engine overhead: submit-and-await round trip and rerouted device calls vs a bare thread hop.

Run: ``python benchmarks/bench_engine.py``. Medians of several runs; ratios are to the floor
measured in the same run (one worker thread, ``queue.SimpleQueue`` + ``threading.Event``).
"""

from __future__ import annotations

import threading
from queue import SimpleQueue

from _common import median_of, per_call_us, report
from exengine import ExecutionEngine
from exengine.base_classes import Device, ExecutorEvent

N = 5000
RUNS = 7


class Trivial(ExecutorEvent):
    def execute(self):
        return None


class Counter(Device):
    def __init__(self):
        super().__init__("Counter")
        self.count = 0

    def bump(self):
        self.count += 1


def bare_hop_us() -> float:
    tasks: SimpleQueue = SimpleQueue()

    def worker():
        while True:
            item = tasks.get()
            if item is None:
                return
            item.set()

    thread = threading.Thread(target=worker)
    thread.start()

    def hop():
        done = threading.Event()
        tasks.put(done)
        done.wait()

    result = per_call_us(hop, N)
    tasks.put(None)
    thread.join()
    return result


def main() -> None:
    engine = ExecutionEngine()
    counter = Counter()
    hop = median_of(RUNS, bare_hop_us)
    round_trip = median_of(
        RUNS, lambda: per_call_us(lambda: engine.submit(Trivial()).await_execution(), N)
    )
    rerouted = median_of(RUNS, lambda: per_call_us(counter.bump, N))
    on_thread = engine.submit(
        lambda: median_of(RUNS, lambda: per_call_us(counter.bump, N * 10))
    ).await_execution()
    report(
        [
            ("submit + await_execution (trivial event)", round_trip, "bare thread hop", hop, "us"),
            ("rerouted device method call", rerouted, "bare thread hop", hop, "us"),
            ("device call already on its thread", on_thread, "target 2 us", 2.0, "us"),
        ]
    )
    engine.shutdown()


if __name__ == "__main__":
    main()

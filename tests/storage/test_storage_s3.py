"""OME-Zarr storage in an S3 object store: moto's S3 server on 127.0.0.1, started here, reached
through zarr's ObjectStore (obstore) and FsspecStore (s3fs) — no mocks of zarr, fsspec or obstore.
Faults are real too: a TCP relay in front of the server stalls or refuses, and a writer process is
SIGKILLed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from exengine import ExecutionEngine
from exengine.data import DataCoordinates, DataHandler
from exengine.kernel.data_handler import DataHandlerError
from exengine.notifications import DataStoredNotification

pytest.importorskip("moto.server", reason="needs moto[server] (extra 'test')")
s3fs = pytest.importorskip(
    "s3fs", reason="needs s3fs (the 'fsspec' extra, or pymmcore-plus which brings it)"
)
pytest.importorskip("obstore", reason="needs the 's3' extra")


from exengine.storage import OMEZarrStorage  # noqa: E402
from exengine.storage.omezarr_reader import OMEZarrDataset  # noqa: E402
from exengine.storage.omezarr_store import open_store  # noqa: E402

STORES = ["obstore", "fsspec"]
SHAPE = (32, 32)
CHANNELS = ("DAPI", "GFP")


def frame(t: int, channel: str) -> np.ndarray:
    return np.full(SHAPE, 1 + 10 * t + CHANNELS.index(channel), np.uint16)


def keys(s3, prefix: str = "") -> list[str]:
    """Every object key in the test bucket under ``prefix`` (read with obstore directly)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(s3.bucket, endpoint=s3.endpoint, client_options={"allow_http": True})
    return sorted(
        meta["path"] for batch in obstore.list(store, prefix=prefix or None) for meta in batch
    )


class Relay:
    """A TCP relay on 127.0.0.1 in front of the S3 server that can stall (hold every byte, as a
    congested or cut network does) or deny (answer every request ``403 AccessDenied``)."""

    DENIED = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message></Error>"
    )

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.denying = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._hold: tuple[bytes, float, threading.Event] | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def hold_next(self, pattern: bytes, seconds: float) -> threading.Event:
        """Hold the next request containing ``pattern`` for ``seconds``, then pass it on (a packet
        delayed on the network, delivered after the client gave up on it); the event is set once it
        is passed on."""
        passed = threading.Event()
        self._hold = (pattern, seconds, passed)
        return passed

    def resume(self) -> None:
        self.denying = False
        self._flowing.set()

    def deny(self) -> None:
        self.denying = True
        self._drop_connections()  # clients reconnect, and are denied

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._drop_connections()
        self._server.close()

    def _drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self.denying:
                threading.Thread(target=self._deny, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target), timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, to_server: bool = False) -> None:
        try:
            while data := source.recv(65536):
                # stalled: stop reading, so TCP pushes back on the sender
                while not self._flowing.wait(0.1):
                    if self._closed.is_set():
                        return
                hold = self._hold
                if to_server and hold is not None and hold[0] in data:
                    self._hold = None
                    time.sleep(hold[1])
                    target.sendall(data)
                    hold[2].set()
                    continue
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _deny(self, client: socket.socket) -> None:
        """Answer the request ``403 AccessDenied`` (before its body when the client waits for ``100
        Continue``)."""
        buffer = b""
        with client:
            try:
                while b"\r\n\r\n" not in buffer:
                    if not (chunk := client.recv(65536)):
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                if not re.search(rb"(?im)^expect:\s*100-continue", head):
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    while len(buffer) < (int(length.group(1)) if length else 0):
                        if not (chunk := client.recv(65536)):
                            return
                        buffer += chunk
                client.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: "
                    b"close\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(self.DENIED) + self.DENIED
                )
            except OSError:
                return


@pytest.fixture
def relay(s3):
    relay = Relay(s3.port)
    yield relay
    relay.close()


def through(relay: Relay, store: str) -> dict:
    """Storage settings that reach the server through ``relay``, in the option names of
    ``store``."""
    return {"endpoint_url": relay.endpoint} if store == "fsspec" else {"endpoint": relay.endpoint}


# ----------------------------------------------------------------------------------------------
# writing
@pytest.mark.parametrize(
    "store, compress", [("obstore", False), ("fsspec", False), ("obstore", True)]
)
def test_frames_round_trip_through_the_store(s3, store, compress):
    stored = []
    ExecutionEngine.get_instance().subscribe_to_notifications(
        lambda n: stored.append(n.payload), DataStoredNotification
    )
    storage = OMEZarrStorage(
        s3.url + "/",
        "run",
        summary_metadata={"z-step_um": 2.5},
        pixel_size_um=0.5,
        compress=compress,
        store=store,
    )
    assert storage.path == f"{s3.url}/run_1.ome.zarr"
    handler = DataHandler(storage)
    for t in range(4):
        for z in range(2):
            for channel in CHANNELS:
                handler.put(
                    {"time": t, "channel": channel, "z": z}, frame(t, channel) + z, {"t": t, "z": z}
                )
    handler.await_completion(60)
    ExecutionEngine.get_instance().shutdown()
    assert len(stored) == len(storage) == 16
    np.testing.assert_array_equal(
        storage.get_data({"time": 3, "channel": "GFP", "z": 1}), frame(3, "GFP") + 1
    )

    # read back by zarr alone, through the other store, as any OME-Zarr tool would
    other = "fsspec" if store == "obstore" else "obstore"
    group = zarr.open_group(open_store(storage.path, other, read_only=True), mode="r")
    array = group["0"]
    assert array.shape == (4, 2, 2, *SHAPE) and bool(array.compressors) is compress
    assert array[3, 1, 1, 0, 0] == frame(3, "GFP")[0, 0] + 1
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["time", "channel", "z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        1.0,
        1.0,
        2.5,
        0.5,
        0.5,
    ]
    assert [c["label"] for c in group.attrs["ome"]["omero"]["channels"]] == list(CHANNELS)

    dataset = OMEZarrDataset(storage.path, store=other)
    assert dataset.finished is True and len(dataset.coordinates()) == 16
    assert dataset.read_metadata({"time": 2, "channel": "DAPI", "z": 1}) == {"t": 2, "z": 1}
    prefix = "runs/run_1.ome.zarr/"
    assert f"{prefix}frame_metadata.jsonl" in keys(s3, prefix)


def test_existing_datasets_are_never_overwritten(s3):
    import obstore
    from obstore.store import S3Store

    raw = S3Store(s3.bucket, endpoint=s3.endpoint, client_options={"allow_http": True})
    obstore.put(raw, "runs/run_1.ome.zarr/zarr.json", b'{"someone": "else"}')
    obstore.put(raw, "runs/run_2.ome.zarr/notes.txt", b"a folder without zarr.json is taken too")
    made: list[str] = []
    barrier = threading.Barrier(4, timeout=30)

    def make(store: str) -> None:
        barrier.wait()
        made.append(OMEZarrStorage(s3.url, "run", store=store).path)

    threads = [threading.Thread(target=make, args=(store,)) for store in STORES * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(p.rsplit("/", 1)[1] for p in made) == [f"run_{n}.ome.zarr" for n in (3, 4, 5, 6)]
    assert (
        bytes(obstore.get(raw, "runs/run_1.ome.zarr/zarr.json").bytes()) == b'{"someone": "else"}'
    )
    assert keys(s3, "runs/run_2.ome.zarr/") == ["runs/run_2.ome.zarr/notes.txt"]


@pytest.mark.parametrize("store", STORES)
def test_endpoint_and_credentials_from_the_aws_config_files(s3, store, monkeypatch, tmp_path):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name)
    (tmp_path / "config").write_text(
        f"[default]\nregion = eu-west-1\nendpoint_url = {s3.endpoint}\n"
    )
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = fromfile\naws_secret_access_key = s\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    storage = OMEZarrStorage(s3.url, "cfg", store=store)
    storage.put({"time": 0, "channel": "DAPI"}, frame(0, "DAPI"), {})
    storage.finish()
    assert (
        OMEZarrDataset(storage.path, store=store).read_frame({"time": 0, "channel": "DAPI"})[0, 0]
        == 1
    )


@pytest.mark.parametrize("store", STORES)
def test_explicit_storage_options(s3, store, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = (
        {"endpoint_url": s3.endpoint, "key": "k", "secret": "s"}
        if store == "fsspec"
        else {
            "endpoint_url": s3.endpoint,
            "key": "k",
            "secret": "s",
            "client_options": {"timeout": "20s"},
        }
    )
    storage = OMEZarrStorage(s3.url, "opts", storage_options=options, store=store)
    storage.put({"time": 0, "channel": "GFP"}, frame(0, "GFP"), {})
    assert storage.get_data({"time": 0, "channel": "GFP"})[0, 0] == 2
    as_json = json.dumps({"endpoint_url": s3.endpoint})  # as the panel's text field passes it
    assert OMEZarrStorage(s3.url, "opts", storage_options=as_json, store=store).path.endswith(
        "opts_2.ome.zarr"
    )


def test_bad_settings_are_refused_clearly(s3):
    with pytest.raises(ValueError, match=r"store must be one of 'obstore', 'fsspec', got 'boto'"):
        OMEZarrStorage(s3.url, "x", store="boto")
    with pytest.raises(ValueError, match="storage_options must be a mapping or a JSON object"):
        OMEZarrStorage(s3.url, "x", storage_options="endpoint=here")
    with pytest.raises(
        ValueError, match=r"Cannot open 's3://b-x/p' with store='obstore'.*no_such_setting"
    ):
        OMEZarrStorage("s3://b-x/p", "x", storage_options={"no_such_setting": 1})
    for store in STORES:
        with pytest.raises(
            OSError, match=r"Cannot create a dataset in 's3://no-such-bucket-here/runs'"
        ):
            OMEZarrStorage("s3://no-such-bucket-here/runs", "x", store=store)


@pytest.mark.parametrize("store", STORES)
def test_a_handler_keeps_several_frames_going_and_their_records_share_objects(s3, store):
    storage = OMEZarrStorage(s3.url, "many", store=store, writes_in_flight=8)
    assert storage.max_writes_in_flight == 8
    handler = DataHandler(storage)
    for t in range(40):
        for channel in CHANNELS:
            handler.put({"time": t, "channel": channel}, frame(t, channel), {"t": t})
    handler.await_completion(60)
    assert handler.frames_stored == 80
    dataset_prefix = storage.path.split(f"{s3.bucket}/", 1)[1]
    record_objects = keys(s3, f"{dataset_prefix}/frame_metadata/")
    assert 1 <= len(record_objects) < 80  # records of frames in flight together went in one object
    dataset = OMEZarrDataset(storage.path, store=store)
    assert len(dataset.coordinates()) == 80
    for t in (0, 17, 39):
        for channel in CHANNELS:
            np.testing.assert_array_equal(
                dataset.read_frame({"time": t, "channel": channel}), frame(t, channel)
            )
            assert dataset.read_metadata({"time": t, "channel": channel}) == {"t": t}
    with pytest.raises(ValueError, match="writes_in_flight must be a whole number >= 1, got 0"):
        OMEZarrStorage(s3.url, "bad", store=store, writes_in_flight=0)


def test_a_frame_put_again_while_its_first_write_completes_is_refused_and_the_first_kept(s3):
    first_stored = threading.Event()

    class CheckingSlowly(OMEZarrStorage):
        slow = False

        # the second put's checks last until the first write is done
        def _check_frame(self, coords, data):
            if self.slow:
                assert first_stored.wait(30)
            return super()._check_frame(coords, data)

    storage = CheckingSlowly(s3.url, "twice")
    outcomes = []
    storage.start_put(
        {"time": 0},
        np.full(SHAPE, 1, np.uint16),
        {"n": 1},
        lambda error: (outcomes.append(error), first_stored.set()),
    )
    storage.slow = True
    with pytest.raises(
        ValueError, match=r"Data at \{'time': 0\} .*already stored.*the first frame is kept"
    ):
        storage.start_put({"time": 0}, np.full(SHAPE, 2, np.uint16), {"n": 2}, outcomes.append)
    assert outcomes == [None]
    assert storage.get_coordinates_list() == [{"time": 0}]
    assert storage.get_data({"time": 0})[0, 0] == 1 and storage.get_metadata({"time": 0}) == {
        "n": 1
    }
    storage.finish()


# ----------------------------------------------------------------------------------------------
# faults
@pytest.mark.parametrize("store", STORES)
def test_a_failing_write_is_a_clear_error_and_no_frame_is_reported_stored(s3, relay, store):
    storage = OMEZarrStorage(
        s3.url, "deny", storage_options=through(relay, store), store=store, timeout_s=30
    )
    for t in range(2):
        storage.put({"time": t, "channel": "DAPI"}, frame(t, "DAPI"), {})
    relay.deny()
    with pytest.raises(
        OSError,
        match=r"Cannot store the frame at \{'time': 2, 'channel': 'DAPI'\} in "
        rf"{re.escape(storage.path)}: .*(Access ?Denied|Forbidden|403|ermission)",
    ):
        storage.put({"time": 2, "channel": "DAPI"}, frame(2, "DAPI"), {})
    assert {"time": 2, "channel": "DAPI"} not in storage and len(storage) == 2

    # through a DataHandler: the failure is raised, and exactly the frames in the store were
    # reported
    stored = []
    ExecutionEngine.get_instance().subscribe_to_notifications(
        lambda n: stored.append(n.payload), DataStoredNotification
    )
    relay.resume()
    storage = OMEZarrStorage(
        s3.url, "deny", storage_options=through(relay, store), store=store, timeout_s=30
    )
    handler = DataHandler(storage)
    with pytest.raises(DataHandlerError, match=r"Access ?Denied|Forbidden|403|ermission"):
        for t in range(3):
            handler.put({"time": t, "channel": "DAPI"}, frame(t, "DAPI"), {})
        deadline = time.monotonic() + 30
        while handler.frames_stored < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        relay.deny()
        for t in range(3, 6):
            handler.put({"time": t, "channel": "DAPI"}, frame(t, "DAPI"), {})
        handler.await_completion(60)
    ExecutionEngine.get_instance().shutdown()
    relay.resume()
    in_store = OMEZarrDataset(storage.path)
    assert (
        sorted(dict(c)["time"] for c in in_store.coordinates())
        == sorted(c["time"] for c in stored)
        == [0, 1, 2]
    )


@pytest.mark.parametrize("store", STORES)
def test_a_record_that_times_out_and_lands_late_names_only_chunks_that_are_there(s3, relay, store):
    storage = OMEZarrStorage(
        s3.url, "late", storage_options=through(relay, store), store=store, timeout_s=1
    )
    storage.put({"time": 0, "channel": "DAPI"}, frame(0, "DAPI"), {"t": 0})
    passed_on = relay.hold_next(b"frame_metadata/", 3.0)
    with pytest.raises(
        OSError, match=r"Cannot store the frame at \{'time': 1, 'channel': 'DAPI'\}"
    ):
        storage.put({"time": 1, "channel": "DAPI"}, frame(1, "DAPI"), {"t": 1})
    assert {"time": 1, "channel": "DAPI"} not in storage
    assert passed_on.wait(20)
    time.sleep(1.0)  # the late record lands
    dataset = OMEZarrDataset(storage.path, store=store)  # as a crash would leave it: not finished
    for coords in dataset.coordinates():  # whatever a record names reads back as it was acquired
        np.testing.assert_array_equal(
            dataset.read_frame(coords), frame(coords["time"], coords["channel"])
        )


@pytest.mark.parametrize("store", STORES)
def test_a_network_stall_blocks_put_and_memory_stays_in_the_budget(s3, relay, store):
    storage = OMEZarrStorage(s3.url, "stall", storage_options=through(relay, store), store=store)
    budget = 4 * frame(0, "DAPI").nbytes
    handler = DataHandler(storage, memory_budget_bytes=budget)
    handler.put({"time": 0, "channel": "DAPI"}, frame(0, "DAPI"), {})
    deadline = time.monotonic() + 30
    while handler.frames_stored < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.stall()
    accepted, peak = [], [0]
    done = threading.Event()

    def produce() -> None:
        for t in range(1, 40):
            handler.put({"time": t, "channel": "DAPI"}, frame(t, "DAPI"), {})
            accepted.append(t)
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    stalled_until = time.monotonic() + 1.5
    while time.monotonic() < stalled_until:
        peak[0] = max(peak[0], handler.bytes_in_flight)
        time.sleep(0.01)
    stored_during_stall = handler.frames_stored
    assert stored_during_stall == 1 and not done.is_set()  # the producer is held: backpressure
    assert len(accepted) <= 4 and peak[0] <= budget  # frames in memory stay within the budget
    relay.resume()
    assert done.wait(60)
    handler.await_completion(60)
    assert handler.frames_stored == 40 and handler.peak_bytes_in_flight <= budget
    assert len(OMEZarrDataset(storage.path).coordinates()) == 40


def test_a_stall_longer_than_the_timeout_fails_the_frame_clearly(s3, relay):
    storage = OMEZarrStorage(s3.url, "slow", storage_options=through(relay, "obstore"), timeout_s=1)
    storage.put({"time": 0, "channel": "DAPI"}, frame(0, "DAPI"), {})
    relay.stall()
    start = time.monotonic()
    with pytest.raises(
        OSError, match=r"Cannot store the frame at \{'time': 1, 'channel': 'DAPI'\}.*within 1 s"
    ):
        storage.put({"time": 1, "channel": "DAPI"}, frame(1, "DAPI"), {})
    assert time.monotonic() - start < 10 and len(storage) == 1


CRASH_WRITER = """
import sys
import numpy as np
from exengine.storage import OMEZarrStorage
storage = OMEZarrStorage(sys.argv[1], "crash", store=sys.argv[2])
print(storage.path, flush=True)
for t in range(100000):
    for c, channel in enumerate(("DAPI", "GFP")):
        frame = np.full((32, 32), 1 + 10 * t + c, np.uint16)
        storage.put({"time": t, "channel": channel}, frame, {"t": t})
        print(t, channel, flush=True)  # only once put has returned: the frame is stored
"""


HANDLER_CRASH_WRITER = """
import sys
import numpy as np
from exengine.data import DataHandler
from exengine.storage import OMEZarrStorage
storage = OMEZarrStorage(sys.argv[1], "crash", store=sys.argv[2])
print(storage.path, flush=True)

def stored(stage, coords):
    if stage == "stored":
        print(coords["time"], coords["channel"], flush=True)

# 64 frames: put waits for the store
handler = DataHandler(storage, memory_budget_bytes=64 * 32 * 32 * 2)
handler.add_listener(stored)
for t in range(100000):
    for c, channel in enumerate(("DAPI", "GFP")):
        frame = np.full((32, 32), 1 + 10 * t + c, np.uint16)
        handler.put({"time": t, "channel": channel}, frame, {"t": t})
"""


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("writer", [CRASH_WRITER, HANDLER_CRASH_WRITER], ids=["put", "handler"])
def test_after_sigkill_the_store_opens_with_every_frame_reported_stored(
    s3, store, writer, sigkill_after_lines
):
    lines = sigkill_after_lines(writer, s3.url, store, lines=30)
    path, reported = lines[0], [line.split() for line in lines[1:]]
    dataset = OMEZarrDataset(path, store=store)
    assert dataset.finished is False
    recorded = set(dataset.coordinates())
    for t, channel in reported:
        coords = {"time": int(t), "channel": channel}
        assert DataCoordinates(coords) in recorded
        np.testing.assert_array_equal(dataset.read_frame(coords), frame(int(t), channel))
        assert dataset.read_metadata(coords) == {"t": int(t)}
    whole = zarr.open_group(open_store(path, store, read_only=True), mode="r")["0"][...]
    assert whole.shape[1:] == (2, *SHAPE)


# ----------------------------------------------------------------------------------------------
# reading
def test_info_summarises_a_dataset_in_the_store(s3):
    from napari_exengine.cli import main

    storage = OMEZarrStorage(s3.url, "info", summary_metadata={"z-step_um": 2})
    for t in range(3):
        for channel in CHANNELS:
            storage.put(
                {"time": t, "channel": channel}, frame(t, channel), {"ElapsedTime-ms": 100 * t}
            )
    storage.finish()
    out = io.StringIO()
    assert main(["info", storage.path], stream=out) == 0
    text = out.getvalue()
    assert (
        f"Dataset: {storage.path}\nFormat: OME-Zarr 0.5 (zarr v3)\nFrames: 6\nFrame: 32 x 32 "
        "uint16\n" in text
    )
    assert "  channel: 2 (DAPI, GFP)" in text and "First/last timestamps: 0 ms / 200 ms" in text
    size = float(re.search(r"Size in the store: ([\d.]+) MB", text).group(1))
    assert size == pytest.approx(6 * 2048 / 1024**2 + 0.0, abs=0.05)


@pytest.mark.gui
def test_a_dataset_in_the_store_opens_in_napari_with_labelled_axes(s3, gui_viewer):
    storage = OMEZarrStorage(s3.url, "view", pixel_size_um=0.25)
    for t in range(3):
        for z in range(2):
            for channel in CHANNELS:
                storage.put({"time": t, "channel": channel, "z": z}, frame(t, channel) + z, {})
    storage.finish()
    layers = gui_viewer.open(storage.path, plugin="napari-exengine")
    assert [layer.name for layer in layers] == ["view_1.ome.zarr DAPI", "view_1.ome.zarr GFP"]
    gfp = layers[1]
    assert gfp.data.shape == (3, 2, *SHAPE) and tuple(gfp.axis_labels) == ("time", "z", "y", "x")
    assert list(gfp.scale) == [1.0, 1.0, 0.25, 0.25]
    assert tuple(gui_viewer.dims.axis_labels) == ("time", "z", "y", "x")
    gui_viewer.dims.current_step = (2, 1, 0, 0)
    np.testing.assert_array_equal(np.asarray(gfp.data[2, 1]), frame(2, "GFP") + 1)
    assert gfp.metadata["path"] == storage.path and gfp.metadata["axis_values"] == {
        "time": [0, 1, 2],
        "z": [0, 1],
    }


def test_the_command_line_writes_to_a_store_url(s3, scope):
    import io

    from exengine.storage.omezarr_reader import OMEZarrDataset
    from napari_exengine.cli import main

    out = io.StringIO()
    status = main(
        [
            "acquire",
            "--time",
            "3",
            "--channels",
            "DAPI,FITC",
            "--exposure",
            "0",
            "--storage",
            "napari-exengine.storage.omezarr",
            "--out",
            s3.url,
            "--name",
            "cli",
        ],
        stream=out,
    )
    assert status == 0, out.getvalue()
    assert f"Done: 6 of 6 frames stored in {s3.url}/cli_1.ome.zarr" in out.getvalue()
    assert len(OMEZarrDataset(f"{s3.url}/cli_1.ome.zarr").coordinates()) == 6


@pytest.mark.gui
def test_the_panel_writes_to_a_store_url(s3, scope, gui_viewer, qtbot):
    from napari_exengine.acquisition_panel import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 3
    panel.storage.backend.value = "napari-exengine.storage.omezarr"
    panel.storage.directory.line_edit.value = s3.url
    assert panel.storage.destination() == s3.url
    panel.run()
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=30000)
    assert (
        panel.acquisition.data_handler.storage.path.startswith(s3.url)
        and len(panel.acquisition.data_handler.storage) == 3
    )
    assert panel.run_control.status.value.startswith("done: 3 of 3 frames stored in s3://")


def test_a_store_lost_mid_run_stops_the_command_within_seconds(s3, relay):
    """The server goes away while ``exengine acquire`` writes to it: every frame in flight fails
    after a few quick retries (not obstore's 10 within 3 minutes); the command stops, says how
    many frames were stored, in a few lines, and exits 1."""
    env = {**os.environ, "AWS_ENDPOINT_URL": relay.endpoint}
    command = [
        sys.executable,
        "-c",
        "from napari_exengine.exengine_script import console; console()",
    ]
    process = subprocess.Popen(
        [
            *command,
            "acquire",
            "--time",
            "100000",
            "--exposure",
            "5",
            "--storage",
            "napari-exengine.storage.omezarr",
            "--out",
            s3.url,
            "--name",
            "lost",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not keys(s3, "runs/lost_1.ome.zarr/frame_metadata/") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        relay.close()
        lost = time.monotonic()
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, err
    assert time.monotonic() - lost < 20
    lines = err.strip().splitlines()
    assert len(lines) <= 5 and all(len(line) <= 520 for line in lines), err
    assert re.search(rf"\(\d+ frames stored in {re.escape(s3.url)}/lost_1.ome.zarr\)$", lines[-1])


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("finished", [False, True], ids=["after a crash", "after a stop"])
def test_a_dataset_in_the_store_resumes(s3, store, finished):
    """Reopened to add frames: its records go on as new objects (the consolidated file of a
    finished run is taken away until the resumed run finishes), the frames before are kept."""
    from exengine.storage.omezarr_resume import resume_omezarr

    options = {"endpoint_url": s3.endpoint} if store == "fsspec" else None
    storage = OMEZarrStorage(s3.url, "resumed", storage_options=options, store=store)
    for t in range(2):
        for channel in CHANNELS:
            storage.put({"time": t, "channel": channel}, frame(t, channel), {"t": t})
    if finished:
        storage.finish()
    resumed = resume_omezarr(storage.path, storage_options=options, store=store)
    assert len(resumed.get_coordinates_list()) == 4
    with pytest.raises(ValueError, match="already stored"):
        resumed.put({"time": 0, "channel": "DAPI"}, frame(9, "DAPI"), {})
    for channel in CHANNELS:
        resumed.put({"time": 2, "channel": channel}, frame(2, channel), {"t": 2})
    assert len(OMEZarrDataset(storage.path).coordinates()) == 6  # readable before it finishes
    resumed.finish()
    dataset = OMEZarrDataset(storage.path)
    assert dataset.finished and len(dataset.coordinates()) == 6
    for t in range(3):
        for channel in CHANNELS:
            assert (
                dataset.read_frame({"time": t, "channel": channel})[0, 0] == frame(t, channel)[0, 0]
            )
    assert dataset.read_metadata({"time": 2, "channel": "GFP"})["t"] == 2


def test_the_command_line_resumes_a_dataset_in_the_store(s3, scope):
    import io

    from napari_exengine.cli import main

    def acquire(*args):
        out = io.StringIO()
        return main(["acquire", *args], stream=out), out.getvalue()

    status, text = acquire(
        "--time",
        "2",
        "--exposure",
        "0",
        "--storage",
        "napari-exengine.storage.omezarr",
        "--out",
        s3.url,
        "--name",
        "cli",
    )
    assert status == 0, text
    url = f"{s3.url}/cli_1.ome.zarr"
    status, text = acquire("--resume", url)
    assert status == 2  # complete
    # as if stopped after the first frame: the second frame's record taken away
    dataset = OMEZarrDataset(url)
    assert len(dataset.coordinates()) == 2
    zarr_store = open_store(url)
    zarr.core.sync.sync(zarr_store.delete("frame_metadata.jsonl"))
    names = sorted(zarr.core.sync.sync(_keys(zarr_store, "frame_metadata/")))
    records = b"".join(
        zarr.core.sync.sync(
            zarr_store.get(n, zarr.core.buffer.default_buffer_prototype())
        ).to_bytes()
        for n in names
    )
    first = [line for line in records.splitlines() if b'"time": 0' in line]
    for n in names:
        zarr.core.sync.sync(zarr_store.delete(n))
    zarr.core.sync.sync(
        zarr_store.set(
            "frame_metadata/000000000.json",
            zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(first[0] + b"\n"),
        )
    )
    status, text = acquire("--resume", url)
    assert status == 0, text
    assert f"Resuming {url}: 1 frame stored; 1 to go" in text
    assert sorted(c["time"] for c in OMEZarrDataset(url).coordinates()) == [0, 1]


async def _keys(zarr_store, prefix):
    return [key async for key in zarr_store.list_prefix(prefix)]

"""Object stores for OME-Zarr: store URLs (``s3://bucket/prefix``), the zarr store that reaches
them (zarr's ``ObjectStore`` on obstore, the default and the faster here, or ``FsspecStore`` on
s3fs), S3 settings completed as the AWS tools complete them (``AWS_*`` environment variables, the
AWS config and credentials files), the create-only write that claims a dataset's name (a folder's
``mkdir`` locally), and the objects that hold the frames' records while a dataset is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ._frames import check_writable
from .store_url import is_store_url, local_path

try:
    from zarr.core.buffer import default_buffer_prototype
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "OME-Zarr storage needs the 'zarr' package: pip install 'napari-exengine[zarr]'"
    ) from error

__all__ = [
    "DEFAULT_STORE",
    "DEFAULT_TIMEOUT_S",
    "PARTIAL",
    "STORES",
    "RecordObjects",
    "bounded",
    "claim",
    "claim_folder",
    "claim_in_store",
    "first_line",
    "is_store_url",
    "local_path",
    "open_store",
    "options_dict",
    "put_documents",
    "write_file",
    "write_files",
]

_EMPTY_GROUP = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'

#: The zarr stores that reach object stores; the default is the faster one by
#: ``benchmarks/bench_s3.py``.
STORES = ("obstore", "fsspec")
DEFAULT_STORE = "obstore"
#: Longest a request to a store may take (network stalls included) before it fails.
DEFAULT_TIMEOUT_S = 300.0
#: How obstore retries a failed request (unless ``retry_config`` is given): a few times within
#: ``retry_timeout``, so that a store that went away is known lost within seconds (obstore's
#: default, 10 retries within 3 minutes, kept every frame in flight retrying for minutes).
RETRY_CONFIG = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
}
#: Longest obstore waits to connect to the store.
CONNECT_TIMEOUT_S = 5

# storage_options as s3fs names them (zarr's convention) -> obstore's S3Store names
_OBSTORE_NAMES = {
    "endpoint_url": "endpoint",
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "anon": "skip_signature",
    "region_name": "region",
}


def first_line(error: BaseException) -> str:
    """The first line of an error's message (obstore's run to dozens of lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def options_dict(storage_options: Any) -> dict[str, Any]:
    if storage_options is None or storage_options == "":
        return {}
    if isinstance(storage_options, str):  # from a text field (the panel) or a settings file
        try:
            storage_options = json.loads(storage_options)
        except json.JSONDecodeError:
            raise ValueError(
                f"storage_options must be a mapping or a JSON object, got {storage_options!r}"
            ) from None
    if not isinstance(storage_options, Mapping):
        raise ValueError(
            f"storage_options must be a mapping or a JSON object, got {storage_options!r}"
        )
    return dict(storage_options)


class _BotocoreCredentials:
    """An obstore credential provider over botocore's chain (environment, config files, SSO,
    instance roles)."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def __call__(self) -> dict[str, Any]:
        frozen = self._credentials.get_frozen_credentials()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + timedelta(minutes=5),
        }


def _obstore_s3_config(options: dict[str, Any]) -> dict[str, Any]:
    """``S3Store`` settings: ``options`` (s3fs or obstore names) completed as the AWS tools
    would."""
    config: dict[str, Any] = {}
    for key, value in {**dict(options.pop("client_kwargs", None) or {}), **options}.items():
        config[_OBSTORE_NAMES.get(key, key)] = value
    if not config.get("skip_signature"):
        config.pop("skip_signature", None)
    profile = config.pop("profile", None)
    try:
        import botocore.session
        from botocore.configprovider import ConfiguredEndpointProvider
    except ImportError:  # obstore alone reads the AWS_* environment variables
        session = None
    else:
        session = botocore.session.Session(profile=profile)
    if session is not None:
        if "endpoint" not in config:
            endpoint = ConfiguredEndpointProvider(
                full_config=session.full_config,
                scoped_config=session.get_scoped_config(),
                client_name="s3",
            ).provide()
            if endpoint:
                config["endpoint"] = endpoint
        if "region" not in config and session.get_config_variable("region"):
            config["region"] = session.get_config_variable("region")
        given = {"access_key_id", "credential_provider", "skip_signature"} & config.keys()
        if not given and not os.environ.get("AWS_ACCESS_KEY_ID"):
            credentials = session.get_credentials()
            if credentials is not None:
                config["credential_provider"] = _BotocoreCredentials(credentials)
    endpoint = str(
        config.get("endpoint")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or ""
    )
    client = dict(config.get("client_options") or {})
    # a local MinIO or test server: plain HTTP as s3fs allows
    if endpoint.lower().startswith("http://"):
        client.setdefault("allow_http", True)
    client.setdefault("connect_timeout", f"{CONNECT_TIMEOUT_S}s")
    config["client_options"] = client
    config.setdefault("retry_config", dict(RETRY_CONFIG))
    return config


def open_store(
    url: str, store: str | None = None, storage_options: Any = None, read_only: bool = False
) -> Any:
    """A zarr store rooted at ``url``: ``ObjectStore`` (``store="obstore"``, default) or
    ``FsspecStore``.

    ``storage_options`` are s3fs's keyword arguments (``endpoint_url``, ``key``, ``secret``,
    ``client_kwargs``, ...); for obstore the common ones are translated and ``S3Store``'s own
    settings (``endpoint``, ``region``, ``client_options``, ``retry_config``, ...) are accepted too.
    """
    kind = DEFAULT_STORE if store is None or store == "" else store
    if kind not in STORES:
        raise ValueError(f"store must be one of {', '.join(map(repr, STORES))}, got {store!r}")
    options = options_dict(storage_options)
    scheme, _, rest = url.partition("://")
    try:
        if kind == "fsspec":
            from zarr.storage import FsspecStore

            return FsspecStore.from_url(url, storage_options=options, read_only=read_only)
        import obstore.store
        from zarr.storage import ObjectStore

        if scheme.lower() in ("s3", "s3a"):
            bucket, _, prefix = rest.partition("/")
            upstream = obstore.store.S3Store(
                bucket, prefix=prefix.strip("/") or None, **_obstore_s3_config(options)
            )
        else:
            upstream = obstore.store.from_url(url, **options)
        return ObjectStore(upstream, read_only=read_only)
    except ImportError as error:
        raise ImportError(
            f"OME-Zarr in {url!r} with store={kind!r} needs {error.name or error}: "
            f"pip install 'napari-exengine[s3]'"
        ) from error
    except Exception as error:
        raise ValueError(
            f"Cannot open {url!r} with store={kind!r} and storage_options {sorted(options)}: "
            f"{first_line(error)}"
        ) from error


async def claim(zarr_store: Any, dataset: str, document: bytes) -> bool:
    """Write ``document`` as the ``zarr.json`` of ``dataset`` only if there is none; False when
    there is (atomic on S3: a create-only write)."""
    key = f"{dataset}/zarr.json"
    upstream = getattr(zarr_store, "store", None)
    if type(upstream).__module__.startswith("obstore"):  # zarr.storage.ObjectStore
        import obstore

        try:
            await obstore.put_async(upstream, key, document, mode="create")
        except obstore.exceptions.AlreadyExistsError:
            return False
        return True
    fs = getattr(zarr_store, "fs", None)  # zarr.storage.FsspecStore
    if fs is not None and "s3" in np.atleast_1d(fs.protocol):
        try:
            await fs._pipe_file(f"{zarr_store.path}/{key}", document, mode="create")
        except FileExistsError:
            return False
        return True
    if await zarr_store.exists(key):  # other stores: not atomic against a concurrent writer
        return False
    await zarr_store.set(key, default_buffer_prototype().buffer.from_bytes(document))
    return True


async def children(zarr_store: Any) -> set[str]:
    return {name.rstrip("/") async for name in zarr_store.list_dir("")}


def claim_folder(directory: str, name: str) -> str:
    """Create and return the first free ``<directory>/<name>_<n>.ome.zarr`` (atomic: ``mkdir``)."""
    check_writable(directory)
    n = 1
    while True:
        path = os.path.join(directory, f"{name}_{n}.ome.zarr")
        try:
            os.mkdir(path)  # a dataset that exists (or is being made) is never reused
        except FileExistsError:
            n += 1
            continue
        return path


def claim_in_store(parent: Any, url: str, name: str, timeout: float) -> str:
    """Claim and return the first free ``<name>_<n>.ome.zarr`` under the store ``parent``; each
    request within ``timeout`` seconds."""
    from zarr.core.sync import sync

    try:
        taken = sync(bounded(children(parent), timeout))
        n = 1
        while True:
            dataset = f"{name}_{n}.ome.zarr"
            if dataset not in taken and sync(
                bounded(claim(parent, dataset, _EMPTY_GROUP), timeout)
            ):
                return dataset
            n += 1
    except Exception as error:
        raise OSError(f"Cannot create a dataset in {url!r}: {first_line(error)}") from error


async def put_documents(zarr_store: Any, documents: Mapping[str, bytes]) -> None:
    """Write each of ``documents`` (bytes by key) to ``zarr_store``, at once."""
    prototype = default_buffer_prototype()
    await asyncio.gather(
        *(zarr_store.set(key, prototype.buffer.from_bytes(doc)) for key, doc in documents.items())
    )


#: What a file is called, after its name, until it is whole (``write_file``).
PARTIAL = ".partial"


def write_file(target: str, data: Any) -> None:
    """Write ``data`` (bytes, or a buffer) to the file ``target``, its folders made, through a
    temporary file renamed into place: whole or absent, also on a full disk (the temporary file is
    removed)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = target + PARTIAL
    try:
        with open(partial, "wb") as file:
            file.write(data)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def write_files(folder: str, documents: Mapping[str, bytes]) -> None:
    """Write each of ``documents`` (bytes by key) to its file under ``folder`` (``write_file``):
    whole or absent, as chunks are (and faster than zarr's I/O loop)."""
    for key, document in documents.items():
        write_file(os.path.join(folder, *key.split("/")), document)


class RecordObjects:
    """The frames' records in a store, in objects ``<prefix><n>.json`` (a line per frame): records
    of frames whose chunks arrive while one object is being written go together in the next, a
    request per frame rather than two when many frames are in flight. Used on zarr's I/O loop."""

    def __init__(self, zarr_store: Any, prefix: str, timeout: float, due: int) -> None:
        self._store, self._prefix, self._timeout, self._due = zarr_store, prefix, timeout, due
        self._started = 0  # record objects begun
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []  # for the next object
        self._writer: asyncio.Future[None] | None = None
        #: Chunks being written, whose records are to come.
        self.chunks_writing = 0

    def chunk_failed(self) -> None:
        """A chunk being written failed: no record comes for it."""
        self.chunks_writing -= 1
        self._write_when_due()

    async def add(self, record: bytes) -> None:
        """Return once ``record`` (of a chunk that was being written) is in the store."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((record, waiter))
        self.chunks_writing -= 1
        self._write_when_due()
        await waiter

    def _write_when_due(self) -> None:
        """Start writing the waiting records when all the frames in flight but ``due`` wait for
        theirs, or no chunk is being written: a request costs a store about as much for a record as
        for a frame's chunk, so few record objects leave it the most for the chunks."""
        if self._are_due() and (self._writer is None or self._writer.done()):
            self._writer = asyncio.ensure_future(self._write())

    def _are_due(self) -> bool:
        return bool(self._waiting) and (not self.chunks_writing or len(self._waiting) >= self._due)

    async def _write(self) -> None:
        prototype = default_buffer_prototype()
        while self._are_due():
            batch, self._waiting = self._waiting, []
            key = f"{self._prefix}{self._started:09d}.json"
            self._started += 1
            try:
                await bounded(
                    self._store.set(
                        key, prototype.buffer.from_bytes(b"".join(r for r, _ in batch))
                    ),
                    self._timeout,
                )
            except BaseException as error:
                # a record that failed names chunks that are there: it may stay if deleting it fails
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._store.delete(key), min(self._timeout, 5.0))
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(error)
            else:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)
        # records not yet due: the next chunk to arrive (or fail) starts the next record object


async def bounded(awaitable: Any, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise TimeoutError(
            errno.ETIMEDOUT, f"the store did not answer within {timeout:g} s"
        ) from None

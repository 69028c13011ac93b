"""The storage tests' S3 server: moto's, on 127.0.0.1, one per test module, and a fresh bucket
per test with the environment's AWS settings pointing at it (and nowhere else)."""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.request
import uuid
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 HTTP server on 127.0.0.1 (a free port) for the module's tests."""
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (extra 'test')")
    pytest.importorskip("obstore", reason="needs the 's3' extra")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # aiobotocore formats one of its debug messages wrongly; when another test has turned debug
    # logging on, pytest's log capture raises that formatting error inside the store's write
    logging.getLogger("aiobotocore").setLevel(logging.INFO)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield SimpleNamespace(endpoint=f"http://{host}:{port}", port=port)
    server.stop()


def make_bucket(endpoint: str) -> str:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(
        urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10
    ).close()
    return bucket


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A fresh bucket; the AWS settings of the environment point at the server (and nowhere
    else)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    with contextlib.suppress(ImportError):  # s3fs caches clients: each test resolves afresh
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    bucket = make_bucket(s3_server.endpoint)
    return SimpleNamespace(
        endpoint=s3_server.endpoint, port=s3_server.port, bucket=bucket, url=f"s3://{bucket}/runs"
    )

"""The S3-API server for the object-store tests: moto on 127.0.0.1, one per session."""

import time

import pytest

from tests.results.s3_server import MotoServer, S3Endpoint, make_bucket


@pytest.fixture(scope="session")
def s3_server():
    """Start moto's S3 over HTTP, make the bucket, yield where it is and the keys; then stop it."""
    started = time.perf_counter()
    server = MotoServer()
    try:
        make_bucket(server.url)
        print(f"\nS3 server on {server.url} ready in {time.perf_counter() - started:.2f} s")
        yield S3Endpoint(server.url)
    finally:
        server.stop()

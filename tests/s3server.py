"""A real S3-compatible server for the tests: moto's standalone server on 127.0.0.1.

Started once per test session as a separate process (``python -m moto.server``, from the test
extra); each test gets a bucket of its own. moto implements the conditional writes
(``If-None-Match: *``) the lake's commits rest on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from marketlake.settings import Settings

ACCESS_KEY = "marketlake-test"
SECRET_KEY = "marketlake-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server."""

    endpoint: str
    proc: subprocess.Popen[bytes]

    def client(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY):  # noqa: ANN201 - boto3 client
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=key,
                            aws_secret_access_key=secret, region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, state_dir: Path, **changes: object) -> Settings:
        """Settings that reach this server (as a user's config file would say)."""
        return Settings.load(environ={}).replace(
            s3_endpoint_url=self.endpoint, s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY,
            s3_region="us-east-1", s3_allow_http=True, state_dir=str(state_dir), **changes,
        )

    def env(self, state_dir: Path) -> dict[str, str]:
        """The environment of a process that reaches this server through the standard variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MARKETLAKE_"))}
        env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true", MARKETLAKE_STATE_DIR=str(state_dir))
        return env


@contextlib.contextmanager
def running_s3_server(*, unauthenticated_requests: int | None = None) -> Iterator[S3Server]:
    """moto's server; with ``unauthenticated_requests`` it checks credentials after that many
    requests (create the IAM user and its key with them)."""
    port = free_port()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    if unauthenticated_requests is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(unauthenticated_requests)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start (is moto[server] installed?)") from None
                time.sleep(0.1)
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()

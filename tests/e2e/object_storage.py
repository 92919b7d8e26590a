"""A real S3-compatible HTTP server for the tests: moto's standalone server in a subprocess, one bucket."""

import os
import pathlib
import socket
import subprocess
import sys

import boto3

from tests.e2e.support import wait_for

BUCKET = "vitrine-test"
# moto accepts any credentials; they only have to be present and the same on both sides.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "vitrine-test", "AWS_SECRET_ACCESS_KEY": "vitrine-test-secret"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """`python -m moto.server` on a free port of 127.0.0.1, its log in a file, and a client to look inside."""

    def __init__(self, *, log_path: pathlib.Path) -> None:
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "S3Server":
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._answers, timeout_s=30, what="the S3 server to answer")
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the S3 server exited:\n{self.log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def environment(self) -> dict[str, str]:
        """What a process needs to keep photos and model versions in this server's bucket."""
        return {
            "VITRINE_STORAGE": "s3",
            "AWS_STORAGE_BUCKET_NAME": BUCKET,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_URL_PROTOCOL": "http:",
            **CREDENTIALS,
        }

    def keys(self, prefix: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [entry["Key"] for entry in listing.get("Contents", [])]

    def empty(self) -> None:
        client = self.client()
        for key in self.keys(""):
            client.delete_object(Bucket=BUCKET, Key=key)


def in_bucket_settings(server: S3Server) -> dict:
    """STORAGES for this test process, built by the settings' own function from the server's environment."""
    from config.settings.base import storages_config

    saved = {name: os.environ.get(name) for name in server.environment()}
    os.environ.update(server.environment())
    try:
        return storages_config(
            storage="s3", staticfiles_backend="django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value

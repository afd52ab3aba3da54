"""Bad input for a lake on object storage: one line, exit code 3, nothing written.

Wrong credentials, a missing bucket, an unreachable endpoint, a bucket holding something that is
not a lake, a plain-HTTP endpoint not allowed: each gets one clear line naming what is wrong, the
lake's exit code (3), no traceback, and the bucket is left exactly as it was.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.s3server import running_s3_server

ROOT = Path(__file__).resolve().parents[2]
CSV = "timestamp,open,high,low,close,volume,turnover\n1704067200000,1,2,0.5,1.5,10,15\n"


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "marketlake", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def _one_line(code: int, out: str, err: str, want: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err, err
    assert code == 3 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert want in lines[0], lines[0]


def _keys(server, bucket: str) -> list[str]:
    got = server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in got.get("Contents", []))


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("csv") / "BTCUSDT_1.csv"
    path.write_text(CSV)
    return path


@pytest.mark.parametrize("command", ["info", "import-csv", "snapshot-create"])
def test_a_missing_bucket_is_one_line_and_nothing_is_created(s3_server, tmp_path, csv_file, command) -> None:
    env = s3_server.env(tmp_path / "state")
    lake = "s3://no-such-bucket-here/lake"
    argv = {"info": ["info", "--lake", lake], "import-csv": ["import-csv", str(csv_file), "--lake", lake],
            "snapshot-create": ["snapshot", "create", "s1", "--lake", lake]}[command]
    code, out, err, _ = _run(env, *argv)
    _one_line(code, out, err, "the bucket does not exist")
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-here" not in names


def test_an_unreachable_endpoint_is_one_line_within_seconds(tmp_path, csv_file) -> None:
    # A port bound but never listening: connections are refused, and no other server of the
    # test run can take it meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MARKETLAKE_"))}
        env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{held.getsockname()[1]}", AWS_ACCESS_KEY_ID="a",
                   AWS_SECRET_ACCESS_KEY="b", AWS_ALLOW_HTTP="true", MARKETLAKE_STATE_DIR=str(tmp_path / "state"))
        for argv in (["info", "--lake", "s3://b/lake"], ["import-csv", str(csv_file), "--lake", "s3://b/lake"]):
            code, out, err, took = _run(env, *argv)
            _one_line(code, out, err, "cannot be reached")
            assert took < 45


def test_a_bucket_holding_something_else_is_refused_and_left_alone(s3_server, tmp_path, csv_file) -> None:
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="reports/2024.pdf", Body=b"%PDF")
    before = _keys(s3_server, bucket)
    env = s3_server.env(tmp_path / "state")
    for argv in (["info", "--lake", f"s3://{bucket}"], ["import-csv", str(csv_file), "--lake", f"s3://{bucket}"],
                 ["check", "--lake", f"s3://{bucket}"]):
        code, out, err, _ = _run(env, *argv)
        _one_line(code, out, err, "not a marketlake lake (reports)")
    assert _keys(s3_server, bucket) == before


def test_plain_http_needs_allow_http(s3_server, tmp_path) -> None:
    env = s3_server.env(tmp_path / "state")
    del env["AWS_ALLOW_HTTP"]
    code, out, err, _ = _run(env, "info", "--lake", f"s3://{s3_server.new_bucket()}/lake")
    _one_line(code, out, err, "AWS_ALLOW_HTTP")


def test_wrong_credentials_are_one_line_naming_the_variables_and_the_secret_never_shows(tmp_path, csv_file) -> None:
    with running_s3_server(unauthenticated_requests=4) as server:
        iam = __import__("boto3").client("iam", endpoint_url=server.endpoint, aws_access_key_id="x",
                                         aws_secret_access_key="x", region_name="us-east-1")
        iam.create_user(UserName="writer")
        key = iam.create_access_key(UserName="writer")["AccessKey"]
        iam.put_user_policy(UserName="writer", PolicyName="all", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'))
        good = server.client(key["AccessKeyId"], key["SecretAccessKey"])
        good.create_bucket(Bucket="team")
        env = server.env(tmp_path / "state")
        env.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY="wrong-secret-value-1234")
        for argv in (["info", "--lake", "s3://team/lake"], ["import-csv", str(csv_file), "--lake", "s3://team/lake"]):
            code, out, err, _ = _run(env, *argv)
            _one_line(code, out, err, "access denied")
            assert "AWS_ACCESS_KEY_ID" in err and "wrong-secret-value-1234" not in out + err
        assert good.list_objects_v2(Bucket="team").get("KeyCount", 0) == 0  # nothing written; the key is valid
        # (moto's signature check rejects some listings with a prefix even for the right key, so
        # the positive side is shown by boto3 above: the same key, with its secret, is accepted.)

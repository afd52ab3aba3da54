"""A lake on an S3-compatible object store (AWS S3, MinIO, R2, Ceph ...): :class:`S3Storage`.

Speaks to the store through ``obstore`` (the Rust ``object_store`` crate delta-rs uses itself).
Put-if-absent is a PUT with ``If-None-Match: *``, the store's conditional write, so several
writers on several machines commit safely without a lock service. Credentials never appear in
a repr, a log line or an error. See :mod:`marketlake.store.storage` for the interface.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from marketlake.errors import LakeError, LakeWriteError
from marketlake.store.storage import ObjectInfo, Storage

__all__ = ["S3Config", "S3Storage", "s3_config_from", "storage_error"]


@dataclass(frozen=True, slots=True)
class S3Config:
    """How to reach an S3-compatible store (credentials masked in the repr).

    Attributes:
        endpoint_url: ``http(s)://host:port`` of a non-AWS store (MinIO, R2, Ceph, moto); empty
            for AWS.
        region: The bucket's region (``us-east-1`` when unset).
        addressing_style: ``path`` (``host/bucket/key``) or ``virtual`` (``bucket.host/key``);
            ``auto``: path style with a custom endpoint, virtual on AWS.
        access_key_id: Credentials (empty: from the environment / instance profile).
        secret_access_key: Masked everywhere.
        session_token: Masked everywhere.
        allow_http: Permit a plain-HTTP endpoint (a local test server).
    """

    endpoint_url: str = ""
    region: str = ""
    addressing_style: str = "auto"
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    allow_http: bool = False

    def __repr__(self) -> str:
        key = f"{self.access_key_id[:4]}***" if self.access_key_id else ""
        secret = "***" if self.secret_access_key else ""
        return (f"S3Config(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
                f"addressing_style={self.addressing_style!r}, access_key_id={key!r}, "
                f"secret_access_key={secret!r}, allow_http={self.allow_http!r})")

    __str__ = __repr__

    @property
    def virtual_hosted(self) -> bool:
        """True for virtual-hosted-style requests."""
        if self.addressing_style == "auto":
            return not self.endpoint_url
        return self.addressing_style == "virtual"

    def _region(self) -> str:
        return self.region or "us-east-1"

    def delta_options(self) -> dict[str, str]:
        """The ``AWS_*`` storage options delta-rs (and object_store) read."""
        out = {"AWS_REGION": self._region(),
               "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true" if self.virtual_hosted else "false"}
        if self.endpoint_url:
            out["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.access_key_id:
            out["AWS_ACCESS_KEY_ID"] = self.access_key_id
            out["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if self.session_token:
            out["AWS_SESSION_TOKEN"] = self.session_token
        if self.allow_http:
            out["AWS_ALLOW_HTTP"] = "true"
        return out

    def object_store_config(self) -> dict[str, str]:
        """The same options in object_store's own (lower-case) names (obstore, Polars)."""
        return {k.lower(): v for k, v in self.delta_options().items()}


_BOOL_TRUE: Final = {"1", "true", "yes", "on"}


def s3_config_from(settings: Any, environ: Mapping[str, str] | None = None) -> S3Config:
    """The S3 configuration: marketlake's settings (file, ``MARKETLAKE_S3_*``, flags) first, then
    the standard ``AWS_*`` variables as boto3 and delta-rs read them."""
    env = os.environ if environ is None else environ

    def pick(field: str, *names: str) -> str:
        value = getattr(settings, field, "") or ""
        if value:
            return str(value)
        for n in names:
            if env.get(n):
                return env[n]
        return ""

    allow = getattr(settings, "s3_allow_http", None)
    allow_http = bool(allow) if allow else env.get("AWS_ALLOW_HTTP", "").strip().lower() in _BOOL_TRUE
    endpoint = pick("s3_endpoint_url", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint.startswith("http://") and not allow_http:
        raise LakeError(f"the S3 endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true "
                        "(or s3_allow_http = true) to allow it")
    return S3Config(
        endpoint_url=endpoint,
        region=pick("s3_region", "AWS_REGION", "AWS_DEFAULT_REGION"),
        addressing_style=getattr(settings, "s3_addressing_style", "auto") or "auto",
        access_key_id=pick("s3_access_key_id", "AWS_ACCESS_KEY_ID"),
        secret_access_key=pick("s3_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        session_token=pick("s3_session_token", "AWS_SESSION_TOKEN"),
        allow_http=allow_http,
    )


class S3Storage(Storage):
    """A lake under ``s3://bucket/prefix`` of an S3-compatible store.

    Args:
        url: ``s3://bucket[/prefix]``.
        config: Endpoint, region and credentials.
    """

    def __init__(self, url: str, config: S3Config, state_root: Path | None = None) -> None:
        rest = url.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        if not bucket or rest.startswith("/"):
            raise LakeError(f"{url}: no bucket in the lake URL (expected s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config
        self.display = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._store: Any = None
        self._arrow: Any = None
        digest = hashlib.sha256(f"{config.endpoint_url}|{self.display}".encode()).hexdigest()[:16]
        base = state_root if state_root is not None else Path.home() / ".cache" / "marketlake"
        self.state_dir = base / f"s3-{bucket}-{digest}"

    def __repr__(self) -> str:
        return f"S3Storage({self.display!r}, {self.config!r})"

    def __getstate__(self) -> dict[str, Any]:  # (sent to Dask workers: the clients are rebuilt)
        return {"bucket": self.bucket, "prefix": self.prefix, "config": self.config, "display": self.display,
                "state_dir": self.state_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = None
        self._arrow = None

    # -- clients

    def _client(self) -> Any:
        if self._store is None:
            from obstore.store import S3Store

            self._store = S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=self.config.object_store_config(),  # type: ignore[arg-type]
                client_options={"connect_timeout": "5s", "timeout": "60s"},
                # A few quick retries: an unreachable endpoint fails in seconds, not minutes.
                retry_config={"max_retries": 3, "retry_timeout": dt.timedelta(seconds=20),
                              "backoff": {"init_backoff": dt.timedelta(milliseconds=100),
                                          "max_backoff": dt.timedelta(seconds=2), "base": 2}},
            )
        return self._store

    def _key(self, key: str) -> str:
        return key.strip("/")

    def uri(self, key: str = "") -> str:
        return f"{self.display}/{key}" if key else self.display

    def _fail(self, what: str, key: str, exc: BaseException) -> LakeError:
        return storage_error(self.display, what, key, exc)

    # -- reads

    def read(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self._client(), self._key(key)).bytes())
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._fail("read", key, exc) from None

    def head(self, key: str) -> ObjectInfo | None:
        import obstore

        try:
            meta = obstore.head(self._client(), self._key(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail("look up", key, exc) from None
        return ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    def has_prefix(self, prefix: str) -> bool:
        import obstore

        parent, _, name = self._key(prefix).rpartition("/")
        if name:
            # A delimited listing of the parent names its children (a table's `_delta_log` and
            # `exchange=...`: a few), where a listing of the prefix returns up to 1,000 of its
            # keys: a log's entries, on every snapshot (moto, 163 entries: 5.5 vs 57 ms).
            try:
                got = obstore.list_with_delimiter(self._client(), parent + "/" if parent else None)
            except Exception as exc:
                raise self._fail("list", prefix, exc) from None
            return any(p.rstrip("/").rsplit("/", 1)[-1] == name for p in got["common_prefixes"])
        try:
            for batch in obstore.list(self._client(), self._key(prefix) + "/", chunk_size=1):
                if len(batch):
                    return True
        except Exception as exc:
            raise self._fail("list", prefix, exc) from None
        return False

    def top_level(self) -> list[str]:
        import obstore

        try:
            got = obstore.list_with_delimiter(self._client())
        except Exception as exc:
            raise self._fail("list", "", exc) from None
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in got["common_prefixes"]]
        names += [o["path"].rsplit("/", 1)[-1] for o in got["objects"]]
        return sorted(names)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        import obstore

        base = self._key(prefix)
        try:
            for batch in obstore.list(self._client(), base + "/" if base else None, chunk_size=1000):
                for meta in batch:
                    yield ObjectInfo(meta["path"], int(meta["size"]), meta["last_modified"].timestamp())
        except Exception as exc:
            raise self._fail("list", prefix, exc) from None

    # -- writes

    def put_if_absent(self, key: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self._client(), self._key(key), data, mode="create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    def put(self, key: str, data: bytes) -> None:
        import obstore

        try:
            obstore.put(self._client(), self._key(key), data)
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    def write_new(self, key: str, write: Callable[[IO[bytes]], None]) -> int:
        buf = io.BytesIO()
        write(buf)
        data = buf.getvalue()
        if not self.put_if_absent(key, data):
            raise LakeWriteError(f"cannot write {self.uri(key)}: it exists already")
        return len(data)

    def delete(self, key: str) -> bool:
        import obstore

        try:
            obstore.delete(self._client(), self._key(key))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail("delete", key, exc) from None
        return True

    def identity(self, key: str) -> str:
        # A prefix has no inode: the first log entry's time and size tell a re-created table.
        info = self.head(key + "/00000000000000000000.json")
        return "" if info is None else f"{info.mtime}:{info.size}"

    # -- other readers

    def polars_options(self) -> dict[str, str]:
        return self.config.object_store_config()

    def delta_options(self) -> dict[str, str]:
        return self.config.delta_options()

    def arrow_filesystem(self) -> tuple[Any, Callable[[str], str]]:
        if self._arrow is None:
            import pyarrow.fs as pafs

            c = self.config
            endpoint = c.endpoint_url
            scheme = "https"
            if endpoint.startswith("http://"):
                scheme, endpoint = "http", endpoint[len("http://"):]
            elif endpoint.startswith("https://"):
                endpoint = endpoint[len("https://"):]
            kwargs: dict[str, Any] = {"region": c.region or "us-east-1", "scheme": scheme,
                                      "force_virtual_addressing": c.virtual_hosted,
                                      "connect_timeout": 5, "request_timeout": 60}
            if endpoint:
                kwargs["endpoint_override"] = endpoint
            if c.access_key_id:
                kwargs.update(access_key=c.access_key_id, secret_key=c.secret_access_key,
                              session_token=c.session_token or None)
            self._arrow = pafs.S3FileSystem(**kwargs)
        base = f"{self.bucket}/{self.prefix}".rstrip("/")
        return self._arrow, (lambda key: f"{base}/{key}")


def storage_error(display: str, what: str, key: str, exc: BaseException) -> LakeError:
    """One line for a failed object-store request, saying what the user can do about it."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    where = f"{display}/{key}" if key else display
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low or "specified bucket does not exist" in low:
        return LakeError(f"{display}: the bucket does not exist (create it, or check the lake URL)")
    if name in ("PermissionDeniedError", "UnauthenticatedError") or "403" in low or "invalidaccesskeyid" in low \
            or "signaturedoesnotmatch" in low or "accessdenied" in low:
        return LakeError(f"{display}: access denied ({what} {key or '/'}): check the credentials "
                         "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or s3_access_key_id / "
                         "s3_secret_access_key) and the bucket's policy")
    if "connect" in low or "dns" in low or "timed out" in low or "timeout" in low or "error sending request" in low:
        return LakeError(f"{display}: the object store cannot be reached ({what} {key or '/'}): check the "
                         "endpoint (AWS_ENDPOINT_URL / s3_endpoint_url) and the network")
    short = text[:200] + ("..." if len(text) > 200 else "")
    return LakeError(f"cannot {what} {where}: {name}: {short}")

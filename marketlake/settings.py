"""The one settings object: a frozen msgspec Struct read from file < environment < CLI flags.

Sources, lowest precedence first:

1. a TOML file: ``--config FILE``, else ``$MARKETLAKE_CONFIG``, else ``./marketlake.toml`` if present;
2. environment variables ``MARKETLAKE_<FIELD>`` (upper-case field name), e.g. ``MARKETLAKE_LAKE_ROOT``;
3. explicit overrides (CLI flags), passed to :meth:`Settings.load`.

Secrets (API key/secret) are masked in ``repr`` so they never reach logs.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from marketlake.errors import ConfigError

__all__ = ["Settings"]

_SECRET_FIELDS = frozenset({"api_key", "api_secret", "s3_secret_access_key", "s3_session_token", "s3_access_key_id"})
_ENV_PREFIX = "MARKETLAKE_"
# A settings file is a few hundred bytes; anything near this is a mistake (or /dev/zero), and
# reading it whole would cost the memory.
MAX_CONFIG_BYTES = 1 << 20
# Knobs of the test suite and the benchmarks (soak rounds, data directories): not settings, so an
# unknown-setting check must not reject them in a process the tests or benchmarks start.
_RESERVED = ("MARKETLAKE_TEST_", "MARKETLAKE_BENCH_")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything marketlake can be configured with.

    Attributes:
        lake_root: Directory of the lake (default ``./lake``).
        exchange: Default exchange of series.
        category: Default Bybit market category (``linear``, ``spot``, ``inverse``).
        base_url: Bybit REST base URL; the emulator's URL in tests.
        archive_url: Host of Bybit's daily trade archives (``marketlake archive``); the
            emulator serves them too, at its own URL.
        api_key: Bybit API key (public data needs none); masked in repr.
        api_secret: Bybit API secret; masked in repr.
        rate_limit_per_5s: Share of Bybit's 600 requests / 5 s this machine may use.
        gc_grace_seconds: The vacuum retention: how long a file a commit replaced stays on disk,
            so readers of an older version (a LazyFrame, a DuckDB view, ``as_of``) keep working,
            and how old a never-committed file must be before vacuum deletes it. Named
            snapshots are kept regardless. Default one hour.
        compact_after_deltas: Fold a partition's files into one once it holds this many (live
            flushes add one small file each).
        memory_limit_percent: Share of system memory the DataFeeder may use.
        state_dir: This machine's own state for lakes on object storage (rate budget, cached
            table state): default ``$XDG_CACHE_HOME/marketlake`` (``~/.cache/marketlake``). A
            local lake keeps it in its ``_meta`` folder.
        s3_endpoint_url: Endpoint of an S3-compatible store (MinIO, R2, Ceph); else
            ``AWS_ENDPOINT_URL``; empty for AWS itself.
        s3_region: Else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; default ``us-east-1``.
        s3_addressing_style: ``path``, ``virtual``, or ``auto`` (path with a custom endpoint).
        s3_access_key_id: Else ``AWS_ACCESS_KEY_ID``; masked in repr.
        s3_secret_access_key: Else ``AWS_SECRET_ACCESS_KEY``; masked in repr.
        s3_session_token: Else ``AWS_SESSION_TOKEN``; masked in repr.
        s3_allow_http: Allow a plain-HTTP endpoint; else ``AWS_ALLOW_HTTP``.

    Every ``MARKETLAKE_*`` environment variable must name a field (a typo is a
    :class:`ConfigError`), except ``MARKETLAKE_CONFIG`` (the TOML file) and the prefixes
    ``MARKETLAKE_TEST_`` and ``MARKETLAKE_BENCH_``, reserved for the test suite's and the
    benchmarks' own knobs.
    """

    lake_root: str = "lake"
    exchange: str = "bybit"
    category: str = "linear"
    base_url: str = "https://api.bybit.com"
    archive_url: str = "https://public.bybit.com"
    api_key: str = ""
    api_secret: str = ""
    rate_limit_per_5s: int = 500
    gc_grace_seconds: float = 3600.0
    compact_after_deltas: int = 16
    memory_limit_percent: float = 90.0
    state_dir: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_addressing_style: str = "auto"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_session_token: str = ""
    s3_allow_http: bool = False

    def __post_init__(self) -> None:
        # Every number is checked for range *and* finiteness: NaN passes any `<` test, and inf or
        # 1e308 seconds overflow the first datetime they meet.
        if not 1 <= self.rate_limit_per_5s <= 600:
            raise ConfigError(f"rate_limit_per_5s must be 1..600, got {self.rate_limit_per_5s}")
        if not (math.isfinite(self.gc_grace_seconds) and 0 <= self.gc_grace_seconds <= 30 * 86_400):
            raise ConfigError(f"gc_grace_seconds must be 0..2592000 (30 days), got {self.gc_grace_seconds}")
        if not 1 <= self.compact_after_deltas <= 100_000:
            raise ConfigError(f"compact_after_deltas must be 1..100000, got {self.compact_after_deltas}")
        if not (math.isfinite(self.memory_limit_percent) and 0 < self.memory_limit_percent <= 100):
            raise ConfigError(f"memory_limit_percent must be in (0, 100], got {self.memory_limit_percent}")
        if self.s3_addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(f"s3_addressing_style must be auto, path or virtual, got {self.s3_addressing_style!r}")

    def __repr__(self) -> str:
        parts = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in _SECRET_FIELDS and value:
                value = "***"
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    @property
    def lake_path(self) -> Path:
        """``lake_root`` as a resolved path."""
        return Path(self.lake_root).expanduser().resolve()

    @property
    def state_path(self) -> Path:
        """``state_dir`` resolved (default ``$XDG_CACHE_HOME/marketlake``)."""
        if self.state_dir:
            return Path(self.state_dir).expanduser().resolve()
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache) / "marketlake"

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from file < environment < ``overrides`` (``None`` values are ignored).

        Raises:
            ConfigError: an unreadable file, an unknown key, or a value of the wrong type.
        """
        env = os.environ if environ is None else environ
        merged: dict[str, Any] = {}
        path = config_file or env.get(_ENV_PREFIX + "CONFIG")
        if path is None and Path("marketlake.toml").is_file():
            path = "marketlake.toml"
        if path is not None:
            merged.update(_read_toml(Path(path)))
        fields = set(cls.__struct_fields__)
        for key, value in env.items():
            if key.startswith(_ENV_PREFIX) and key != _ENV_PREFIX + "CONFIG" and not key.startswith(_RESERVED):
                name = key[len(_ENV_PREFIX):].lower()
                if name not in fields:
                    raise ConfigError(f"unknown setting in environment: {key}")
                merged[name] = value
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            # strict=False lets environment strings become ints/floats.
            return msgspec.convert(merged, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid settings: {exc}") from None

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated)."""
        return msgspec.structs.replace(self, **changes)


def _read_config_bytes(path: Path) -> bytes:
    """The file's bytes; refuses what is not a regular file of at most :data:`MAX_CONFIG_BYTES`.

    The type is checked on ``stat`` *before* opening, because opening a FIFO blocks until a writer
    appears; the open is non-blocking and re-checked with ``fstat`` so a file swapped in between
    cannot hang or flood us either.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"config file {path} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {path} is not a regular file (a device or FIFO?)")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {st.st_size:,} bytes; the limit is {MAX_CONFIG_BYTES:,}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ConfigError(f"config file {path} is not a regular file")
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes")
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    raw = _read_config_bytes(path)
    try:
        data = msgspec.toml.decode(raw)
    except (OSError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    # Allow the settings either at top level or under [marketlake].
    section = data.get("marketlake", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [marketlake] must be a table")
    return dict(section)

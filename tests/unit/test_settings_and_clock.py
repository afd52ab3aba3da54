import asyncio

import pytest

from marketlake.clock import ManualClock, SystemClock, get_clock, use_clock
from marketlake.core.timeutil import ms_to_text, to_ms
from marketlake.errors import ConfigError, DataValidationError
from marketlake.settings import Settings


def test_settings_precedence_is_file_then_environment_then_flags(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('lake_root = "from-file"\nrate_limit_per_5s = 100\ncategory = "spot"\n')
    env = {"MARKETLAKE_LAKE_ROOT": "from-env", "MARKETLAKE_RATE_LIMIT_PER_5S": "200"}
    s = Settings.load(cfg, overrides={"lake_root": "from-flag", "category": None}, environ=env)
    assert s.lake_root == "from-flag"
    assert s.rate_limit_per_5s == 200
    assert s.category == "spot"


def test_settings_accept_a_marketlake_table(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[marketlake]\nlake_root = "x"\n')
    assert Settings.load(cfg, environ={}).lake_root == "x"


def test_lake_root_defaults_to_dot_lake():
    assert Settings.load(environ={}).lake_root == "lake"


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"MARKETLAKE_NOPE": "1"}, "unknown setting"),
        ({"MARKETLAKE_RATE_LIMIT_PER_5S": "lots"}, "invalid settings"),
        ({"MARKETLAKE_RATE_LIMIT_PER_5S": "601"}, "rate_limit_per_5s"),
    ],
)
def test_bad_settings_raise_config_error(env, text):
    with pytest.raises(ConfigError, match=text):
        Settings.load(environ=env)


def test_unknown_key_in_file_is_a_config_error(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text("lake_rot = 'typo'\n")
    with pytest.raises(ConfigError):
        Settings.load(cfg, environ={})


def test_missing_or_broken_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Settings.load(tmp_path / "none.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("lake_root = [unclosed")
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(bad, environ={})


def test_secrets_are_masked_in_repr():
    s = Settings.load(overrides={"api_key": "k-123", "api_secret": "s-456"}, environ={})
    assert "k-123" not in repr(s) and "s-456" not in str(s)
    assert s.api_key == "k-123"


def test_settings_are_frozen():
    s = Settings.load(environ={})
    with pytest.raises(AttributeError):
        s.lake_root = "x"  # type: ignore[misc]


def test_manual_clock_replaces_the_system_clock_and_sleep_advances_it():
    clock = ManualClock(start_ms=1_000_000_000_000)
    assert isinstance(get_clock(), SystemClock)
    with use_clock(clock):
        assert get_clock() is clock
        asyncio.run(get_clock().sleep(2.5))
        assert clock.now_ms() == 1_000_000_002_500
        assert clock.monotonic() == 2.5
    assert isinstance(get_clock(), SystemClock)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01", 1_704_067_200_000),
        ("2024-01-01 00:00:01", 1_704_067_201_000),
        ("2024-01-01T02:00:00+02:00", 1_704_067_200_000),
        (1_704_067_200_000, 1_704_067_200_000),
        ("1704067200000", 1_704_067_200_000),
    ],
)
def test_to_ms_reads_the_time_forms_users_type(value, expected):
    assert to_ms(value) == expected


@pytest.mark.parametrize("bad", ["yesterday", 1_704_067_200, True, 3.5, "2024-13-01"])
def test_to_ms_rejects_what_is_not_a_time(bad):
    with pytest.raises(DataValidationError):
        to_ms(bad)


def test_ms_to_text_is_the_old_datetime_format():
    assert ms_to_text(1_640_995_200_000) == "2022-01-01 00:00:00"


def test_test_and_benchmark_knobs_in_the_environment_are_not_settings():
    env = {"MARKETLAKE_TEST_KILL_ROUNDS": "50", "MARKETLAKE_BENCH_DATA": "/tmp/x", "MARKETLAKE_CATEGORY": "spot"}
    assert Settings.load(environ=env).category == "spot"
    with pytest.raises(ConfigError, match="MARKETLAKE_TESTS_TYPO"):
        Settings.load(environ={**env, "MARKETLAKE_TESTS_TYPO": "1"})

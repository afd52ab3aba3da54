"""DataCollectionConfig, CSVManager and DataIntegrityChecker driven as the old API reference does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketlake.compat import CSVManager, DataCollectionConfig, DataIntegrityChecker
from marketlake.errors import ConfigError, ImportRejectedError

MIN = 60_000
T = 1_640_995_200_000  # 2022-01-01 00:00 UTC, the reference's example


def candle(i: int, step: int = MIN, **over: float) -> dict:
    c = {"timestamp": T + i * step, "open": 47000.0 + i, "high": 47100.0 + i, "low": 46900.0 + i,
         "close": 47050.0 + i, "volume": 1000.0 + i}
    c.update(over)
    return c


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataCollectionConfig:
    monkeypatch.setenv("BYBIT_API_KEY", "key-AAAA")
    monkeypatch.setenv("BYBIT_API_SECRET", "secret-BBBB")
    cfg = DataCollectionConfig()
    cfg.DATA_DIR = str(tmp_path / "data")
    cfg.LAKE_DIR = str(tmp_path / "lake")
    return cfg


def test_config_attributes_env_and_masking(config: DataCollectionConfig) -> None:
    for name, kind in [("BYBIT_API_KEY", str), ("BYBIT_API_SECRET", str), ("API_BASE_URL", str),
                       ("SYMBOLS", list), ("TIMEFRAMES", list), ("DATA_DIR", str),
                       ("LIMIT_TO_50_ENTRIES", bool), ("FETCH_ALL_SYMBOLS", bool), ("DAYS_TO_FETCH", int),
                       ("ENABLE_WEBSOCKET", bool), ("RUN_INTEGRITY_CHECK", bool), ("RUN_GAP_FILLING", bool),
                       ("BULK_BATCH_SIZE", int), ("BULK_REQUEST_DELAY_MS", int), ("BULK_MAX_RETRIES", int)]:
        assert isinstance(getattr(config, name), kind), name
    assert (config.BYBIT_API_KEY, config.BYBIT_API_SECRET) == ("key-AAAA", "secret-BBBB")
    for text in (repr(config), str(config), repr(vars(config)), json.dumps(config.as_dict()),
                 f"{config}", repr(config.to_settings())):
        assert "key-AAAA" not in text and "secret-BBBB" not in text
    assert "BYBIT_API_KEY='***'" in repr(config)
    config.BYBIT_API_KEY = "other"
    assert config.BYBIT_API_KEY == "other" and "other" not in repr(config)
    # The reference's usage: attributes are set freely, then used.
    config.SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    config.TIMEFRAMES = ["1", "5", "15"]
    config.DAYS_TO_FETCH = 100
    settings = config.to_settings()
    assert settings.api_key == "other" and settings.lake_root == config.LAKE_DIR


@pytest.mark.parametrize(
    "name, value",
    [("SYMBOLS", ["btc/usdt"]), ("SYMBOLS", "BTCUSDT"), ("TIMEFRAMES", ["7"]), ("TIMEFRAMES", []),
     ("DAYS_TO_FETCH", 0), ("DAYS_TO_FETCH", True), ("BULK_BATCH_SIZE", -1), ("API_BASE_URL", "ftp://x"),
     ("CATEGORY", "futures"), ("BULK_MAX_RETRIES", -1)],
)
def test_config_validation(config: DataCollectionConfig, name: str, value: object) -> None:
    setattr(config, name, value)
    with pytest.raises(ConfigError):
        config.validate()


def test_csv_manager_as_in_the_reference(config: DataCollectionConfig) -> None:
    csv_manager = CSVManager(config)
    assert csv_manager.read_csv_data("BTCUSDT", "1") == []
    assert csv_manager.get_latest_timestamp("BTCUSDT", "1") == 0
    candle_data = [{"timestamp": 1640995200000, "datetime": "2022-01-01 00:00:00", "open": 47000.0,
                    "high": 47100.0, "low": 46900.0, "close": 47050.0, "volume": 1000.0}]
    assert csv_manager.write_csv_data("BTCUSDT", "1", candle_data) is True
    data = csv_manager.read_csv_data("BTCUSDT", "1")
    assert data == candle_data
    assert (Path(config.DATA_DIR) / "BTCUSDT_1.csv").read_text().splitlines() == [
        "timestamp,datetime,open,high,low,close,volume",
        "1640995200000,2022-01-01 00:00:00,47000.0,47100.0,46900.0,47050.0,1000.0",
    ]
    # append: out of order, overlapping, repeated: chronological, one row per timestamp, new wins.
    new_candles = [candle(3), candle(1), candle(0, close=47060.0), candle(2), candle(3, close=1.5)]
    assert csv_manager.append_new_data("BTCUSDT", "1", new_candles) is True
    data = csv_manager.read_csv_data("BTCUSDT", "1")
    assert [c["timestamp"] for c in data] == [T, T + MIN, T + 2 * MIN, T + 3 * MIN]
    assert data[0]["close"] == 47060.0 and data[3]["close"] == 1.5
    assert data[1]["datetime"] == "2022-01-01 00:01:00"
    assert csv_manager.get_latest_timestamp("BTCUSDT", "1") == T + 3 * MIN
    updated_candle = {"timestamp": 1640995200000, "open": 47000.0, "high": 47100.0, "low": 46900.0,
                      "close": 47050.0, "volume": 1000.0}
    assert csv_manager.update_candle("BTCUSDT", "1", updated_candle) is True
    assert csv_manager.read_csv_data("BTCUSDT", "1")[0]["close"] == 47050.0
    assert csv_manager.update_candle("BTCUSDT", "1m", candle(10)) is True  # alias: same file
    assert csv_manager.get_latest_timestamp("BTCUSDT", "1") == T + 10 * MIN
    # turnover survives when given
    assert csv_manager.write_csv_data("ETHUSDT", "5", [candle(0, turnover=12.5)])
    assert csv_manager.read_csv_data("ETHUSDT", "5")[0]["turnover"] == 12.5


def test_write_csv_data_keeps_the_50_newest(config: DataCollectionConfig) -> None:
    config.LIMIT_TO_50_ENTRIES = True
    m = CSVManager(config)
    rows = [candle(i) for i in reversed(range(120))]
    assert m.write_csv_data("BTCUSDT", "1", rows)
    data = m.read_csv_data("BTCUSDT", "1")
    assert [c["timestamp"] for c in data] == [T + i * MIN for i in range(70, 120)]
    assert m.append_new_data("BTCUSDT", "1", [candle(200), candle(5)])
    data = m.read_csv_data("BTCUSDT", "1")
    assert len(data) == 50 and data[-1]["timestamp"] == T + 200 * MIN and data[0]["timestamp"] == T + 71 * MIN
    config.LIMIT_TO_50_ENTRIES = False
    assert m.append_new_data("BTCUSDT", "1", [candle(5)]) and len(m.read_csv_data("BTCUSDT", "1")) == 51


def test_csv_manager_bad_input(config: DataCollectionConfig) -> None:
    m = CSVManager(config)
    assert m.write_csv_data("BTCUSDT", "1", [{"timestamp": T, "open": 1.0}]) is False  # missing fields
    assert m.write_csv_data("BTCUSDT", "1", [candle(0) | {"timestamp": T // 1000}]) is False  # seconds
    assert m.write_csv_data("BTCUSDT", "1", [candle(0) | {"close": "abc"}]) is False
    assert m.write_csv_data("BTCUSDT", "1", ["not a dict"]) is False  # type: ignore[list-item]
    assert m.write_csv_data("../etc/passwd", "1", [candle(0)]) is False
    assert m.write_csv_data("BTCUSDT", "../../x", [candle(0)]) is False
    assert not Path(config.DATA_DIR).exists() or list(Path(config.DATA_DIR).iterdir()) == []
    Path(config.DATA_DIR).mkdir(parents=True, exist_ok=True)
    (Path(config.DATA_DIR) / "BTCUSDT_1.csv").write_text("timestamp,open\nxx,1\n")
    with pytest.raises(ValueError, match="BTCUSDT_1.csv"):
        m.read_csv_data("BTCUSDT", "1")
    assert m.append_new_data("BTCUSDT", "1", [candle(0)]) is False  # a corrupt file is not overwritten
    assert (Path(config.DATA_DIR) / "BTCUSDT_1.csv").read_text() == "timestamp,open\nxx,1\n"


def write_faulty_files(config: DataCollectionConfig) -> None:
    m = CSVManager(config)
    # BTCUSDT 1m: 0..9 then 13..19 (3 missing), candle 5 twice, candle 7 invalid (high < low).
    rows = [candle(i) for i in [*range(10), *range(13, 20)]]
    rows[7] = candle(7, high=46000.0)
    assert m.write_csv_data("BTCUSDT", "1", rows)
    path = Path(config.DATA_DIR) / "BTCUSDT_1.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:7], lines[6], *lines[7:]]) + "\n")  # repeat the row of candle 5
    assert m.write_csv_data("ETHUSDT", "5", [candle(i, step=5 * MIN) for i in range(30)])
    (Path(config.DATA_DIR) / "BADUSDT_1.csv").write_text("timestamp,open,high,low,close,volume\n1,2,3\n")


def test_integrity_report_structure_key_by_key(config: DataCollectionConfig) -> None:
    write_faulty_files(config)
    checker = DataIntegrityChecker(config)
    report = checker.check_all_files()
    assert list(report) == ["files_checked", "files_with_issues", "total_gaps", "total_duplicates",
                            "total_invalid_candles", "issues"]
    assert (report["files_checked"], report["files_with_issues"], report["total_gaps"],
            report["total_duplicates"], report["total_invalid_candles"]) == (2, 1, 1, 1, 1)
    assert list(report["issues"]) == ["BTCUSDT_1.csv", "ETHUSDT_5.csv"]
    assert "BADUSDT_1.csv" in checker.errors
    btc = report["issues"]["BTCUSDT_1.csv"]
    assert list(btc) == ["has_issues", "gaps", "duplicate_count", "invalid_candles", "total_candles",
                         "first_timestamp", "last_timestamp"]
    assert btc["has_issues"] is True and btc["duplicate_count"] == 1 and btc["invalid_candles"] == 1
    assert btc["total_candles"] == 18
    assert (btc["first_timestamp"], btc["last_timestamp"]) == ("2022-01-01 00:00:00", "2022-01-01 00:19:00")
    assert btc["gaps"] == [{
        "position": 11, "previous_timestamp": "2022-01-01 00:09:00", "current_timestamp": "2022-01-01 00:13:00",
        "expected_interval": "0:01:00", "actual_interval": "0:04:00", "gap_duration": "0:03:00",
        "missing_candles": 3, "gap_minutes": 3.0,
    }]
    eth = report["issues"]["ETHUSDT_5.csv"]
    assert eth == {"has_issues": False, "gaps": [], "duplicate_count": 0, "invalid_candles": 0,
                   "total_candles": 30, "first_timestamp": "2022-01-01 00:00:00",
                   "last_timestamp": "2022-01-01 02:25:00"}
    file_report = checker.check_single_file("BTCUSDT_1.csv")
    assert file_report == btc and len(file_report["gaps"]) == 1 and file_report["duplicate_count"] == 1
    report_path = checker.save_integrity_report(report)
    assert Path(report_path).parent == Path(config.DATA_DIR)
    assert json.loads(Path(report_path).read_text()) == report
    assert checker.save_integrity_report(report) != report_path  # never overwrites
    assert checker.check_all_files()["files_checked"] == 2  # the JSON reports are not data files


def test_fix_duplicates_and_fill_gaps(config: DataCollectionConfig) -> None:
    write_faulty_files(config)
    checker = DataIntegrityChecker(config)
    assert checker.fix_duplicates("BTCUSDT_1.csv") is True
    assert checker.fix_duplicates("BTCUSDT_1.csv") is False
    assert checker.check_single_file("BTCUSDT_1.csv")["duplicate_count"] == 0
    assert checker.fill_gaps_in_file("BTCUSDT_1.csv") is True
    assert checker.fill_gaps_in_file("BTCUSDT_1.csv") is False
    after = checker.check_single_file("BTCUSDT_1.csv")
    assert (after["gaps"], after["total_candles"]) == ([], 20)
    data = CSVManager(config).read_csv_data("BTCUSDT", "1")
    filled = [c for c in data if T + 10 * MIN <= c["timestamp"] <= T + 12 * MIN]
    assert [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in filled] == [
        (47059.0, 47059.0, 47059.0, 47059.0, 0.0)] * 3  # candle 9's close carried, no volume
    checker.fix_all_duplicates()
    checker.fill_all_gaps()  # the corrupt file is skipped, not touched
    report = checker.check_all_files()
    assert report["total_gaps"] == 0 and report["total_duplicates"] == 0 and report["total_invalid_candles"] == 1
    for bad in ("../BTCUSDT_1.csv", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            checker.check_single_file(bad)
    with pytest.raises(FileNotFoundError):
        checker.check_single_file("SOLUSDT_1.csv")
    with pytest.raises(ImportRejectedError):
        checker.fix_duplicates("BADUSDT_1.csv")

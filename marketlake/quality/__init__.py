"""Data quality over the lake: ``check`` (integrity, gaps told apart by the ledger) and ``repair``."""

from marketlake.quality.check import LakeCheck, SeriesCheck, check_lake
from marketlake.quality.repair import RepairReport, SeriesRepair, repair_lake

__all__ = ["LakeCheck", "RepairReport", "SeriesCheck", "SeriesRepair", "check_lake", "repair_lake"]

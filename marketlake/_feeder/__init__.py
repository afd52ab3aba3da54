"""Internals of :class:`marketlake.DataFeeder` (``marketlake/feeder.py``); not public API.

* :mod:`.rules` — the no-lookahead rule, time arguments, candle rows as dicts;
* :mod:`.parts` — reading one partition, the partition cache, point lookups;
* :mod:`.budget` — memory figures and the size estimate of a request;
* :mod:`.stream` — time-ordered, memory-bounded batches over many series;
* :mod:`.align` — the as-of join behind ``DataFeeder.aligned``.
"""

"""Numba kernels of the pure core: plain arrays in, plain arrays out, ``cache=True``, ``nogil``.

* :mod:`~marketlake.core.kernels.calendar`: bucket floor / next open, fixed and calendar months;
* :mod:`~marketlake.core.kernels.trades`: trades → candles, flat fill;
* :mod:`~marketlake.core.kernels.resample`: candles → larger timeframe;
* :mod:`~marketlake.core.kernels.check`: the one-pass integrity scan.

Each has a plain-Python twin in :mod:`marketlake.core.reference`; the public functions wrapping
them are in :mod:`marketlake.core.candles`, :mod:`marketlake.core.integrity` and
:mod:`marketlake.core.consistency`.
"""

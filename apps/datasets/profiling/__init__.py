"""Profile a dataset in one pass over Arrow record batches: the JSON stored on `DatasetVersion.profile`.

Exact, from every row: row count, missing values, min/max/mean/std (streaming, with Chan et al.'s
parallel update), distinct counts (a bitmap for integers and dates in a range of a few million; else 64-bit
hashes of the values, exact up to a memory cap, then a k-minimum-values estimate), duplicate rows (a 64-bit
hash per row) and the top values of columns with few distinct values. From a uniform sample of rows
(bottom-k of random keys): quantiles, histograms (scaled to the exact count), correlations, personal data by
content and formula-like text.

A batch's columns are processed in a small thread pool; NumPy and Arrow release the GIL in their loops.
"""

from __future__ import annotations

from .batches import profile_batches

__all__ = ["profile_batches"]

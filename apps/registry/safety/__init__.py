"""Pickle and joblib uploads: opcode scan, sandboxed conversion to skops, and the admin-trusted path."""

from .convert import examine_pickle
from .trusted import trusted_pickle_directory

__all__ = ["examine_pickle", "trusted_pickle_directory"]

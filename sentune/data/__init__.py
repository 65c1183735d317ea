"""Readers for the real formats and the built-in sample data sets."""

from sentune.data._builtin import BUILTIN_DATASETS, builtin_dir, ensure_builtin, prepare_builtin
from sentune.data._config import DataConfig, DataSplits, load_splits
from sentune.data._readers import TextDataset, read_csv, read_label_names, read_sst, read_texts, write_sst

__all__ = [
    "BUILTIN_DATASETS",
    "DataConfig",
    "DataSplits",
    "TextDataset",
    "builtin_dir",
    "ensure_builtin",
    "load_splits",
    "prepare_builtin",
    "read_csv",
    "read_label_names",
    "read_sst",
    "read_texts",
    "write_sst",
]

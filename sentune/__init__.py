"""sentune: distributed hyperparameter tuning for text sentiment classifiers on Ray."""

from sentune.errors import ConfigError, DataError, SentuneError

__all__ = ["ConfigError", "DataError", "SentuneError"]
__version__ = "0.1.0"

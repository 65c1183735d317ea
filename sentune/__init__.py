"""sentune: distributed hyperparameter tuning for text sentiment classifiers on Ray."""

from sentune.errors import ConfigError, DataError, SentuneError, TrialError

__all__ = ["ConfigError", "DataError", "SentuneError", "TrialError"]
__version__ = "0.1.0"

"""Errors that separate "the job is misconfigured" from "this trial failed".

A :class:`ConfigError` (and its :class:`DataError` kind) is raised before Ray starts and carries
one line a user can act on. A trial that fails inside Ray is not one of these: Ray Tune records it
against that trial (status ``errored`` in trials.parquet) and the sweep goes on.
"""

__all__ = ["MESSAGE_LIMIT", "ClusterError", "ConfigError", "DataError", "SentuneError", "format_validation", "one_line"]

MESSAGE_LIMIT = 300  # the most characters an error message may hold


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one line of at most ``limit`` characters: every line break and run of white space
    (U+2028 included) becomes one space, other control characters are escaped, and a longer text is
    cut with "..."."""
    text = " ".join(str(text).split())
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SentuneError(Exception):
    """Base class of every error sentune raises on purpose; its message is always :func:`one_line`, with any
    credentials in a URI it quotes masked."""

    def __init__(self, message: object = "", *args: object):
        from sentune._uri import redact_text

        super().__init__(one_line(redact_text(str(message))), *args)


class ConfigError(SentuneError):
    """The job, its search space or a trainable option is invalid; nothing was run."""


class DataError(ConfigError):
    """A data file is missing, empty or malformed; the message names the file and line."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class ClusterError(SentuneError):
    """The cluster cannot be reached, refused our token, or does not know the job."""


def format_validation(source: str, exc) -> str:
    """One line for a pydantic ``ValidationError``: ``source: where: what`` (the first problem), at most
    :data:`MESSAGE_LIMIT` characters (a key or value quoted from the input is cut short)."""
    err = exc.errors()[0]
    where = ".".join(one_line(str(x), 40) for x in err["loc"])
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return one_line(f"{source}: {where + ': ' if where else ''}{msg}")

"""The console handler: a CLI run in-process under a capture that later closes must not break later output."""

import io
import sys

from sentune import _log


def test_the_console_follows_sys_stdout_after_a_capture_closed(capsys):
    saved, level, propagate = list(_log.logger.handlers), _log.logger.level, _log.logger.propagate
    for h in saved:
        _log.logger.removeHandler(h)
    try:
        captured, real = io.StringIO(), sys.stdout
        sys.stdout = captured
        _log.console()
        _log.log_line("under the capture")
        sys.stdout = real
        captured.close()  # what a test's capture does once it ends
        _log.log_line("after it")  # raised 'I/O operation on closed file' through flush() before
        out = capsys.readouterr()
        assert "[sentune] after it" in out.out and "Logging error" not in out.err
    finally:
        for h in list(_log.logger.handlers):
            _log.logger.removeHandler(h)
        for h in saved:
            _log.logger.addHandler(h)
        _log.logger.setLevel(level)
        _log.logger.propagate = propagate

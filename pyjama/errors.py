"""User-facing errors: each one is printed as a single line, never a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad config, bad bound, missing file...).

    The message is complete on its own: it names the file, the place (line or JSON
    path), the bad value and what is allowed. CLIs print ``Error: <message>`` and exit 2.
    """


class WorkerBug(Exception):
    """An unexpected exception raised in another process (a job's worker process,
    :mod:`pyjama.workers`): its traceback text (for the job's log), type name and message."""

    def __init__(self, text: str, name: str, message: str):
        super().__init__(message)
        self.text, self.name, self.message = text, name, message


def one_line_errors(command, *args) -> int:
    """Run a CLI command: a UserError becomes ``Error: <message>`` on stderr and exit 2, an
    interrupt exit 130 — never a traceback. Returns the command's exit code."""
    import sys

    try:
        return command(*args)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # disk full, permission denied, read-only filesystem ...
        print(f"Error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130


class StepFailed(UserError):
    """A step could not finish a partition; the message names the partition."""


_OS_CAUSES = {
    "ENOSPC": "no space left on device; free space on that filesystem and run again",
    "EDQUOT": "disk quota exceeded; free space (or raise the quota) and run again",
    "EACCES": "permission denied; allowed: a folder this user may write (check its owner and mode)",
    "EPERM": "operation not permitted; allowed: a folder this user may write (check its owner and mode)",
    "EROFS": "read-only file system; allowed: a writable folder (remount it read-write or run elsewhere)",
}


def errno_of(exc: OSError):
    """The errno of ``exc``, or None. pyarrow raises a plain OSError with no errno when a
    write hits a full disk; its text "No space left on device" counts as ENOSPC."""
    import errno

    if exc.errno is not None:
        return exc.errno
    if "No space left on device" in str(exc):
        return errno.ENOSPC
    return None


def os_error_text(exc: OSError) -> str:
    """An OSError as THE one line both CLIs print: ``<file>: <cause>; <what to do>``
    (the file relative to the working folder when inside it)."""
    import errno as _errno
    import os

    code = errno_of(exc)
    text = str(exc)
    name = _errno.errorcode.get(code, "")
    cause = _OS_CAUSES.get(name) or (f"{exc.strerror} ({name})" if exc.strerror and name
                                     else text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    where = exc.filename
    if where is not None:
        where = os.fspath(where)
        try:
            rel = os.path.relpath(where)
            if not rel.startswith(".."):
                where = rel
        except ValueError:
            pass
        return f"{where}: {cause}"
    return cause

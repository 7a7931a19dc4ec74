"""User-facing errors: each one is printed as a single line, never a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad config, bad bound, missing file...).

    The message is complete on its own: it names the file, the place (line or JSON
    path), the bad value and what is allowed. CLIs print ``Error: <message>`` and exit 2.
    """


def one_line_errors(command, *args) -> int:
    """Run a CLI command: a UserError becomes ``Error: <message>`` on stderr and exit 2, an
    interrupt exit 130 — never a traceback. Returns the command's exit code."""
    import sys

    try:
        return command(*args)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130


class StepFailed(UserError):
    """A step could not finish a partition; the message names the partition."""

"""User-facing errors: each one is printed as a single line, never a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad config, bad bound, missing file...).

    The message is complete on its own: it names the file, the place (line or JSON
    path), the bad value and what is allowed. CLIs print ``Error: <message>`` and exit 2.
    """


class StepFailed(UserError):
    """A step could not finish a partition; the message names the partition."""

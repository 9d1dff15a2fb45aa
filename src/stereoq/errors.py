"""The one error type core code raises for problems a user can fix."""


class StereoqError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits non-zero.

    ``exit_code`` is 2 for configuration/option mistakes and 1 for everything else.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

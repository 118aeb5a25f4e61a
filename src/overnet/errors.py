"""Errors a user can act on. Each maps to one HTTP status on the agent's API and to one line
on the CLI's standard error with exit code 1."""


class OvernetError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(OvernetError):
    status = 404


class Conflict(OvernetError):
    status = 409


class Invalid(OvernetError):
    status = 400


class Unavailable(OvernetError):
    status = 503

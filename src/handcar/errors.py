"""The exceptions handcar raises. Each message is one line a caller can show as is."""


class HandcarError(Exception):
    """A failure reported to the user as one line; `exit_code` is what the CLI returns."""

    exit_code = 1


class ConfigError(HandcarError):
    """config.json (or a process.json) is malformed or invalid; the message names the field."""


class UsageError(HandcarError):
    """The command line is wrong: an unknown flag, a missing argument."""


class ContainerNotFound(HandcarError):
    def __init__(self) -> None:
        super().__init__("container does not exist")


class ContainerNotRunning(HandcarError):
    def __init__(self) -> None:
        super().__init__("container not running")


class ExecSetupError(HandcarError):
    """exec failed before the process started: runc exits 255 then."""

    exit_code = 255

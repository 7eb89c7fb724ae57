"""The exceptions the command line turns into one line and an exit status of their own, and the exit statuses."""

import enum


class ExitStatus(enum.IntEnum):
    """What ``equiv`` exits with: every finding holds (0), one fails (1), bad input (2: one line, nothing written),
    a fault of the environment after the start (3: model cache, tracking store, disk), interrupted (130)."""

    OK = 0
    FINDING_FAILED = 1
    BAD_INPUT = 2
    ENVIRONMENT = 3
    INTERRUPTED = 130


class UserInputError(ValueError):
    """Bad input from the user (model, layer, position, prompt, device, output path, ...).

    Raised once, at the edge, with a message that names the valid range. The CLI prints the message on one
    line and exits with status 2; nothing is written and no traceback is shown.
    """


class EnvironmentFault(RuntimeError):
    """A fault of the environment after the run started: the model cache, the tracking store, the disk.

    The message names what failed and what to do. The CLI prints it on one line and exits with status 3
    (``--debug`` shows the traceback); outputs already promised are written where possible.
    """


class UserCodeError(UserInputError):
    """The user's own steering code (``equiv check``) is at fault before it runs: its file raises on import, the
    name is missing, the signature fits no form, it hands back the wrong thing. ``str`` is one line of ours; the CLI
    prints ``user_traceback`` (the traceback lines in the user's file) after it; exit 2."""

    def __init__(self, message: str, user_traceback: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


class UserCodeRaised(RuntimeError):
    """The user's own steering code raised while it ran (``equiv check``): one line of ours naming the step, then
    ``user_traceback``; exit 1, as a failed check."""

    def __init__(self, message: str, user_traceback: tuple[str, ...] = (), when: str = "", error: str = "") -> None:
        super().__init__(message)
        self.user_traceback = user_traceback
        self.when = when  # "at step 1 (decode)", "before the first forward pass"
        self.error = error  # the error's own line: "IndexError: index 3 is out of bounds ..."


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message (its type's name when the message is empty), cut at ``limit``
    characters with an ellipsis."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_line(error: BaseException) -> str:
    """``Type: message`` on one line. Some libraries put a whole traceback in the message (nnsight 0.5's
    NNsightException): then the last line naming an error, which is the original one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    original = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1])
    return f"{type(error).__name__}: {original}"

"""The one exception type for mistakes a user can make, so the CLI can report them in one line."""


class UserInputError(ValueError):
    """Bad input from the user (model, layer, position, prompt, device, ...).

    Raised once, at the edge, with a message that names the valid range. The CLI prints the message on one
    line and exits with status 2; nothing is written and no traceback is shown.
    """

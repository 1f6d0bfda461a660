"""Exit codes and the one exception that turns a foreseeable mistake into a one-line error."""

EXIT_OK, EXIT_CELLS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UserError(Exception):
    """A foreseeable mistake: printed as one line, exit code 2."""

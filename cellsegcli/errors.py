"""Errors the user can act on.

Library code raises :class:`CellsegError` with a one-line message that names the file (or option) at
fault and says how to fix it. The CLI turns it into that line on stderr and exit code 1; any other
exception is an internal error (exit code 2).
"""


class CellsegError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class OutputExistsError(CellsegError):
    """The output already exists and overwriting was not requested."""


class WriteError(CellsegError):
    """Writing an output failed (a full disk, a read-only folder, a lost mount): the input was fine, so a
    ``cellseg segment`` run keeps its finished frames for ``--resume``."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``docker stop``): handled like Ctrl-C, exit code 143."""

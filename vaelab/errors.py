"""User-facing errors: bad configuration, bad files, bad paths.

A :class:`UserError` is reported by the CLI as one line on stderr and exit code 2,
without a traceback (set ``HYDRA_FULL_ERROR=1`` to see one). Raise it for anything
the user can fix by changing their command or their files; let genuine bugs raise
ordinary exceptions.
"""


from numbers import Real


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what and how to fix it."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss or a gradient became NaN/inf: the run stops, its last checkpoint stays finite."""

    exit_code = 1


def check_int(key: str, value, *, minimum: int, optional: bool = False) -> int | None:
    """``value`` as an int, or a one-line UserError naming ``key`` and the valid range.

    ``optional``: None is allowed (e.g. "no periodic evaluation").
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = " or null" if optional else ""
        raise UserError(f"{key}={value!r}: expected an integer >= {minimum}{allowed}")
    return value


def check_real(key: str, value, *, above: float) -> float:
    """``value`` as a float, or a one-line UserError naming ``key`` and the valid range."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UserError(f"{key}={value!r}: expected a number > {above:g}")
    if not value > above:
        raise UserError(f"{key}={value}: expected a number > {above:g}")
    return float(value)

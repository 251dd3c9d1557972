"""The errors `app` raises for input it refuses; `web` maps them to its JSON error and forms."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input refused at submission (a job's fields, a provider's parameters, an upload).

    `field` names the offending field (a dotted path such as `inputs[3].prompt`); web answers 400
    with code `invalid_parameter`.
    """

    status = 400
    code = "invalid_parameter"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InputConflict(InvalidInput):
    """Input that contradicts what is already stored (an idempotency key reused with another body): 409."""

    status = 409
    code = "conflict"

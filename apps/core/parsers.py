"""Request body parsers for the API: DRF's, made safe against bodies that crash the standard library or the database."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

NUL = "\x00"


def _shown(key: str) -> str:
    # The key itself may hold the NUL; echo it escaped so the answer names it readably.
    return key.replace(NUL, "\\u0000")


def nul_path(data) -> tuple[str, str] | None:
    """Where the first NUL character is in parsed JSON: (the top-level field, the full path such as
    `answers.intended_use` or `items[3].label`), or None.

    PostgreSQL refuses NUL in text and jsonb, so a NUL that reached a save would be a 500 (or, in the prediction
    log, a drain that fails on every retry). Iterative, so a body that parsed cannot overflow the stack here."""
    stack = [(data, "", "")]
    while stack:
        value, path, top = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return top or "non_field_errors", path or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{path}.{_shown(key)}" if path else _shown(key)
                field = top or _shown(key)
                if NUL in key:
                    return field, name
                stack.append((item, name, field))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", top or "non_field_errors") for i, item in enumerate(value))
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a deeply nested body (`[[[[…`) is a 400, not a RecursionError and a 500, and a NUL
    character anywhere (`"\\u0000"`, in a value or a key) is a 400 naming the field, not a database error, and a
    body that is a bare scalar is a 400 rather than an AttributeError in the view."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        if not isinstance(data, dict | list):
            # No endpoint takes a bare `null`, string or number, and views read the body with .get().
            raise ValidationError({"non_field_errors": ["Send a JSON object, e.g. {\"name\": \"…\"}."]})
        found = nul_path(data)
        if found is not None:
            field, path = found
            raise ValidationError({field: [f"Text may not contain NUL (\\u0000) characters (found at {path})."]})
        return data

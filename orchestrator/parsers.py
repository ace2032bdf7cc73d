"""The API's one request parser: JSON through orjson, which is strict where the standard library is not."""

from __future__ import annotations

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class StrictJSONParser(BaseParser):
    """``application/json`` bodies, parsed with orjson: invalid UTF-8, lone surrogates (``"\\ud800"``), NaN and
    Infinity are a 400 here, instead of strings that later fail to encode (a 500) or numbers JSON cannot
    carry back out. Every body this API takes is an object, so anything else is a 400 too."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            body = orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ParseError("The body must be a JSON object.")
        return body

"""What the Responses translator refuses, as 400s in OpenAI's error shape.

InvalidRequest (router.errors)         400 invalid_request_error
└── UntranslatableRequest              a field a Chat Completions upstream cannot honour (code unsupported_parameter)
    └── BuiltinToolUnsupported         a hosted tool (web_search, file_search…) on a translated route (code unsupported_tool)

Malformed Responses bodies (wrong types, missing fields) raise plain ``InvalidRequest``.
Every error names the offending field in ``param`` (``input[3].content[0].file_id``).
"""

from __future__ import annotations

from router.errors import InvalidRequest


class UntranslatableRequest(InvalidRequest):
    code = "unsupported_parameter"


class BuiltinToolUnsupported(UntranslatableRequest):
    code = "unsupported_tool"

"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, for every status.

type: `invalid_request_error` for 4xx (401 included, as OpenAI does), `rate_limit_error` for 429,
`server_error` for 5xx. `param` names the offending request field (or null); `code` is a stable
machine-readable reason (the README's table lists them)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


class ApiError(Exception):
    """A request the API refuses: raised anywhere while handling it, rendered by `response()`."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.code, self.param)

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def bad_field(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code, param)


ENGINE_DOWN_RETRY_S = 10  # a dead engine means the process exits and its supervisor restarts it


def engine_unavailable(message: str) -> ApiError:
    return ApiError(503, message, "engine_unavailable", headers={"Retry-After": str(ENGINE_DOWN_RETRY_S)})


def render_error(status: int, code: str, message: str) -> web.Response:
    """For token_server.http_guard.unexpected_errors: a 500 naming only a request id."""
    return web.json_response(error_body(status, message, code), status=status)

"""Errors of the users' API: each is an RFC 9457 problem (status, title, detail) answered as JSON."""

from __future__ import annotations

from cloud.errors import CloudError


class ApiError(CloudError):
    """A refused request; `status` and `title` go in the problem document, the message is its detail,
    `extra` are more members of it (RFC 9457's extensions: what a program reads rather than the detail)."""

    def __init__(self, status: int, detail: str, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           409: "Conflict", 411: "Length required", 413: "Content too large", 415: "Unsupported media type",
           422: "Unprocessable content", 429: "Too many requests", 500: "Internal error", 503: "Unavailable"}


def title(status: int) -> str:
    return _TITLES.get(status, "Error")

"""RFC 9457 problem details as every service and the gateway render them."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PROBLEM_BASE", "PROBLEM_MEDIA_TYPE", "CheckResult", "FieldError", "Problem", "problem_type"]

#: Stable problem `type` URIs are this base plus a slug (e.g. `.../check-failed`).
PROBLEM_BASE = "https://a62-registry.org/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    """The stable `type` URI of a problem slug."""
    return PROBLEM_BASE + slug


class FieldError(BaseModel):
    """One invalid field of a request."""

    loc: list[str | int]
    msg: str
    type: str


class CheckResult(BaseModel):
    """One failed check of the published catalogue (GET /v1/checks)."""

    code: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem; extensions such as `errors`, `checks` or `transaction_id` ride along."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="Stable URI identifying the problem kind")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None

    def extensions(self) -> dict[str, Any]:
        """The members beyond the RFC's five."""
        return dict(self.__pydantic_extra__ or {})

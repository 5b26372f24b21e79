"""HTTP routes of the reporting service (thin: parse, authorize, call the service, answer)."""

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()

"""HTTP routes of the transactions service (thin: parse, authorize, call the service, answer)."""

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()

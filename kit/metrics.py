"""Prometheus metrics of every process, served at `/metrics`."""

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["EVENTS_PUBLISHED", "HTTP_REQUESTS", "HTTP_REQUEST_SECONDS", "UPSTREAM_ERRORS", "metrics_endpoint"]

HTTP_REQUESTS = Counter(
    "registry_http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "registry_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UPSTREAM_ERRORS = Counter(
    "registry_gateway_upstream_errors_total", "Gateway calls to a service that failed", ["upstream", "kind"]
)
EVENTS_PUBLISHED = Counter(
    "registry_events_published_total", "Outbox events given a feed position", ["service"]
)
FEED_LAST_POSITION = Gauge("registry_feed_last_position", "Last position assigned on the feed", ["service"])


async def metrics_endpoint(_request: Request) -> Response:
    """Prometheus text exposition of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

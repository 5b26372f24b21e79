"""Conformance tooling for the inter-registry protocol (INTERREGISTRY §11): the runner (`python -m
conformance`, `conformance.kit`) and the reference national-registry simulator (`conformance.simulator`)."""

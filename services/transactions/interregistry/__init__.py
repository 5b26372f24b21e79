"""The inter-registry protocol IRX 1.0 inside the transactions service (INTERREGISTRY §2–§4): registry
records and lifecycle, the registry→IR message pipeline, `hello`, the signed inbox and its relay."""

"""Developer and operator scripts: migrations, the local launcher, schema generation."""

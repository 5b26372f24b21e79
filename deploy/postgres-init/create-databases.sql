-- Runs once, when the compose PostgreSQL volume is first initialised (docker-entrypoint-initdb.d).
-- One database per process (DESIGN §2); each process migrates its own with `python -m scripts.migrate`.
-- The owner is the compose superuser (POSTGRES_USER); in production use one role per database.
CREATE DATABASE registry_gateway;
CREATE DATABASE registry_party_sections;
CREATE DATABASE registry_transactions;
CREATE DATABASE registry_ars;
CREATE DATABASE registry_reporting;

-- sluice-a uses the default database (POSTGRES_DB); sluice-b gets its own.
CREATE DATABASE sluice_b OWNER sluice;

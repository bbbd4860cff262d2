"""Unit tests of the services, one folder per service (mirroring services/)."""

"""Event logging service: impressions and interactions into PostgreSQL, and metrics over them."""

"""Gateway service: Search, Recommend and Track, composed from the other four services."""

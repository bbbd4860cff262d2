"""Code shared by every Shelfwise service: errors, text processing, configuration."""

"""Ranking service: orders candidates by features with a learned CTR head or a documented formula."""

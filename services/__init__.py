"""Shelfwise services: domain logic and gRPC servers for e-commerce search."""

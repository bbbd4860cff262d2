"""Query understanding: normalization, spelling correction, language and filter extraction.

Pure domain logic; it never imports grpc.
"""

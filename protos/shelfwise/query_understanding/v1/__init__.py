"""Generated protobuf package; do not edit (see protos/generate.py)."""

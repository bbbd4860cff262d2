"""Offline model tooling for Shelfwise: exporting pretrained encoders into the Triton model repository."""

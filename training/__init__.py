"""Offline model tooling for Shelfwise: everything that makes or measures a model (encoders,
search relevance, recommendations, the CTR/CVR head, experiments), one package per job; the
services read what it writes into the model repository and never import it."""

"""Experiments: A/B and interleaving reports, simulated shoppers on the real stack, the fair
comparison of what is learned from behaviour, and off-policy evaluation."""

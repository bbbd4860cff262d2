"""The CTR/CVR head: impressions into rows, the prior and the MLP family, the boosted-tree
family, synthetic impressions, training, installing a trained head, and its evaluation."""

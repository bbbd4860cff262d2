"""Recommendations: sequence data, the sequential recommender, its training and export, its
evaluation against popularity and RecBole's SASRec, and training on the shop's own events."""

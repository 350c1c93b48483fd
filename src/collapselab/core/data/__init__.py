"""Classification data: the container and its check, synthetic generators, loaders."""

from ._check import ClassificationData, check_data, check_labels
from .synthetic import etf_features, gaussian_clusters, sequentially_separable, simplex_etf

__all__ = [
    "ClassificationData",
    "check_data",
    "check_labels",
    "etf_features",
    "gaussian_clusters",
    "sequentially_separable",
    "simplex_etf",
]

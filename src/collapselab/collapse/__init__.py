"""Neural-collapse measurement: exact, streaming, distributed (Papyan, Han & Donoho 2020, PHD;
Galanti et al. 2022; Ji et al. 2022; docs/theory/neural-collapse.md).

The vocabulary: the metric functions on in-memory ``(features, labels)``, the streaming
accumulator :class:`CollapseStatistics` (update / merge / all_reduce / report), the report
object :class:`CollapseReport`, and :class:`CollapseTracker` / :func:`measure` for any
``nn.Module`` (with :class:`FeatureCache`, which lets a two-pass measurement run the model once). Figures live in :mod:`collapselab.collapse.plots`.

Example::

    from collapselab.collapse import measure
    report = measure(model, loader, num_classes=10)   # the input of the last nn.Linear
    print(report.nc1, report.nc4, report.as_dict())

Features larger than memory (a ``.npy`` file, read in blocks; two exact passes)::

    from collapselab.collapse import stream_report
    from collapselab.experiments import progress
    report = stream_report("features.npy", "labels.npy", progress=progress)
"""

from ._cache import FeatureCache
from ._functions import NC2, cdnv, class_moments, collapse_report, mse_decomposition, nc1, nc2, nc3, nc4, principal_angles
from ._labels import map_labels
from ._margins import MarginStats, margin_statistics, margin_stats, margins
from ._metrics import MSEDecomposition
from ._moments import ClassMoments, SampleSums
from ._report import REPORT_KEYS, CollapseReport
from ._sources import stream_report
from ._streaming import CollapseStatistics
from ._tracker import CollapseTracker, last_linear, measure

__all__ = [
    "ClassMoments",
    "CollapseReport",
    "CollapseStatistics",
    "CollapseTracker",
    "FeatureCache",
    "MSEDecomposition",
    "MarginStats",
    "NC2",
    "REPORT_KEYS",
    "SampleSums",
    "cdnv",
    "class_moments",
    "collapse_report",
    "last_linear",
    "map_labels",
    "margin_statistics",
    "margin_stats",
    "margins",
    "measure",
    "mse_decomposition",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "principal_angles",
    "stream_report",
]

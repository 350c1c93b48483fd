"""CollapseLab: the geometry of training deep classifiers.

Explicit zero-loss minimizers of deep ReLU networks, gradient flows in parameter and
output space, the effective truncation dynamics of clustered data, and neural
collapse, from its measurement on any PyTorch model to the toy models that explain it.
"""

__version__ = "0.1.0"

from .core.errors import CollapseLabError

__all__ = ["CollapseLabError", "__version__"]

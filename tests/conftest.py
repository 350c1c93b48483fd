"""Suite-wide settings.

One torch thread: the suite's problems are tiny, and on a loaded 2-core machine OpenMP's
thread pool made them up to 100x slower (the CLI's --quick default is one thread too).
Results are bit-reproducible for a fixed thread count, so every test sees the same one.
"""

import torch

torch.set_num_threads(1)

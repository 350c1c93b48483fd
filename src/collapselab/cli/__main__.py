"""``python -m collapselab.cli`` (and ``torchrun -m collapselab.cli``): the ``collapselab`` command."""

from . import main

main()

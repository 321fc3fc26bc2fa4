"""``python -m controller.cli``: the ``shoal`` command."""

from controller.cli import main

main()

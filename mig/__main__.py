"""``python -m mig`` is the ``mig`` command."""

from mig.cli import main

main()

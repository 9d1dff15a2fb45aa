"""``python -m stereoq`` (used under ``torchrun``)."""

from stereoq.cli import main

main()

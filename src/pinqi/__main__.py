"""``python -m pinqi`` runs the command line."""

from pinqi.cli import main

main()

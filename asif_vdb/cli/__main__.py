"""``python -m asif_vdb.cli``: the ``asif`` command."""

from asif_vdb.cli import main

main()

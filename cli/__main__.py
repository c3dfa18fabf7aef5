"""``python -m cli``: the same as the ``hearth`` script."""

from cli.main import main

main()

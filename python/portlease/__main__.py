"""``python -m portlease``: the ``portlease`` command."""

from portlease._cli import main

main()

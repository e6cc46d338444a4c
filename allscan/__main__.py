"""`python -m allscan`: the same as the `allscan` command."""

from allscan.cli import main

main()

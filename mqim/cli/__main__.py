"""`python -m mqim.cli`: the same as the `mqim` console script."""

from mqim.cli import main

main()

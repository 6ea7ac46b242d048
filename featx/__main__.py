"""`python -m featx ...` (and `torchrun -m featx ...`): the featx command line."""

from featx.cli import main

main()

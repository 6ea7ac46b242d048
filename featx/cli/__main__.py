"""`python -m featx.cli ...` (and `torchrun -m featx.cli ...`): the featx command line."""

from featx.cli import main

main()

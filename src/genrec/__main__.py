"""`python -m genrec ...` is the `genrec` command."""

from genrec.cli import main

main()

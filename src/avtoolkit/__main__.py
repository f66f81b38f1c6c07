"""`python -m avtoolkit` is the `avtoolkit` command."""

from avtoolkit.cli import main

if __name__ == "__main__":
    main()

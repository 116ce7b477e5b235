"""``python -m ranklab.sweep`` (also how ``--workers N`` starts its worker processes)."""

from ranklab.sweep.cli import main

if __name__ == "__main__":
    main()

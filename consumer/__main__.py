"""`python -m consumer` is the `engagement-consumer` console script."""

from consumer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

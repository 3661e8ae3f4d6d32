"""`python -m yingshe` is `yingshe` (torchrun launches modules this way)."""

from yingshe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Metrics, reports, figures and run comparison.

`yingshe.evaluate(run)` is `yingshe.api.evaluate`: this package is callable (see yingshe/_callable.py).
"""

from yingshe._callable import make_callable

make_callable(__name__, "yingshe.api:evaluate")

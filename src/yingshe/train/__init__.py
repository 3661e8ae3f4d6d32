"""The training loop, optimisers, schedules, EMA, class balancing and callbacks.

`yingshe.train(config)` is `yingshe.api.train`: this package is callable (see yingshe/_callable.py).
"""

from yingshe._callable import make_callable

make_callable(__name__, "yingshe.api:train")

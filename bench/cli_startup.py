"""How long `yingshe --help` / `--version` take, against the eager import they used to pay.

Baseline: `python -c "import yingshe.api"` (torch, torchvision, matplotlib: what `import yingshe`
loaded before the package became lazy). Candidate: the commands themselves. Wall seconds, the
median of REPEATS runs each, in one process tree on the same machine at the same time.
Ends with one line of key=value pairs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

REPEATS = 5


def seconds(*args: str) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    eager = seconds("-c", "import yingshe.api")
    help_s = seconds("-m", "yingshe", "--help")
    train_help = seconds("-m", "yingshe", "train", "--help")
    version = seconds("-m", "yingshe", "--version")
    print(
        f"eager_import_s={eager:.3f} help_s={help_s:.3f} train_help_s={train_help:.3f} "
        f"version_s={version:.3f} help_speedup_ratio={eager / help_s:.1f}"
    )


if __name__ == "__main__":
    main()

"""Checked downloads: stream to a temporary file, verify SHA-256, then rename into place.

A file that fails its checksum is deleted and never seen under its final name, so an interrupted
or tampered download can't be mistaken for the dataset by a later run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from yingshe.errors import YingsheError
from yingshe.runs import file_sha256

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def download(
    url: str,
    target: Path,
    sha256: str,
    timeout: float = 60.0,
    progress: ProgressFn | None = None,
) -> Path:
    """Fetch `url` to `target` unless a file with the right checksum is already there."""
    if target.is_file() and file_sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "yingshe"})
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=timeout) as response,
        ):
            total = response.length
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise YingsheError(
                f"{url} downloaded with SHA-256 {digest.hexdigest()}, expected {sha256}",
                f"the file is corrupt or has been changed; retry, or place a verified copy at {target}",
            )
        os.replace(tmp, target)
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise YingsheError(
            f"could not download {url}: {err}",
            f"check the network, or download the file yourself and place it at {target}",
        ) from err
    finally:
        tmp.unlink(missing_ok=True)

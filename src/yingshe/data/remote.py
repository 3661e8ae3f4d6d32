"""Shard lists for many machines: brace ranges, globs and URLs, opened through fsspec.

`--data 'shards/train-{000000..000099}.tar'` names 100 shards; `http://host/wds/train-{0..9}.tar`,
`file:///shared/wds/*.tar` or any other fsspec URL (`s3://`, `gs://`, ... with the fsspec
backend for it installed) name shards that every rank opens by itself. Brace expansion is the
small expander below (`{a..b}` zero-padded integer ranges and `{x,y}` alternatives, as in bash);
`*`/`?` globs go to fsspec's own glob. Plain local paths are opened with `open`; everything else
goes through `fsspec.open`. For http(s) fsspec's aiohttp filesystem is used when aiohttp is
installed (the `fsspec[http]` extra), else fsspec's requests-based one: readers seek to each
image's offset with an HTTP range request. Object stores and static web servers answer those;
a server that ignores ranges (`python -m http.server`) sends the whole shard for every image,
which `read_bytes` still reads correctly but at the cost of one full shard download per image.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from pathlib import Path
from typing import BinaryIO

from yingshe.errors import YingsheError

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_GLOB = re.compile(r"[*?\[]")


def is_url(spec: str) -> bool:
    return "://" in spec or "::" in spec


def is_shard_list(spec: str) -> bool:
    """A spec that names shards by pattern or URL rather than by one existing local path."""
    if Path(spec).expanduser().exists():
        return False
    return is_url(spec) or bool(re.search(r"\{[^{}]*(\.\.|,)[^{}]*\}", spec)) or bool(_GLOB.search(spec))


def expand_braces(pattern: str) -> list[str]:
    """All strings a bash-style brace pattern names, in order: `a{1..3}` → a1 a2 a3, `{08..10}`
    → 08 09 10 (zero padding as the wider bound is written), `{x,y}` → x y; groups multiply
    left to right. An unbalanced brace is an error (it is never a file name the user meant)."""
    parts: list[list[str]] = []
    text, depth, start = "", 0, 0
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                parts.append([text])
                text, start = "", i + 1
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise _unbalanced(pattern)
            if depth == 0:
                parts.append(_alternatives(pattern[start:i], pattern))
        elif depth == 0:
            text += ch
    if depth:
        raise _unbalanced(pattern)
    parts.append([text])
    return ["".join(p) for p in itertools.product(*parts)]


def _alternatives(body: str, pattern: str) -> list[str]:
    match = _RANGE.match(body)
    if match:
        a, b = match.groups()
        lo, hi = int(a), int(b)
        width = max(len(a), len(b)) if a.lstrip("-").startswith("0") or b.lstrip("-").startswith("0") else 0
        step = 1 if hi >= lo else -1
        return [f"{n:0{width}d}" for n in range(lo, hi + step, step)]
    pieces, depth, cur = [], 0, ""
    for ch in body:  # split on top-level commas; nested groups expand recursively
        if ch == "," and depth == 0:
            pieces.append(cur)
            cur = ""
            continue
        depth += (ch == "{") - (ch == "}")
        cur += ch
    pieces.append(cur)
    if len(pieces) == 1:  # `{abc}`: not a group in bash either, kept as written
        return [f"{{{body}}}"]
    return [s for piece in pieces for s in expand_braces(piece)]


def _unbalanced(pattern: str) -> YingsheError:
    return YingsheError(
        f"unbalanced braces in the shard pattern {pattern!r}",
        "write ranges as {000000..000099} and alternatives as {a,b}",
    )


def shard_list(spec: str) -> list[str]:
    """The shards a pattern names, braces expanded and globs resolved, each listed once, in order.
    Local paths come back as paths; URLs as URLs."""
    shards: list[str] = []
    for item in expand_braces(spec):
        if _GLOB.search(item):
            found = _glob(item)
            if not found:
                raise YingsheError(f"no shard matches {item!r}", "check the pattern and the folder or URL")
            shards += found
        else:
            shards.append(item)
    seen: set[str] = set()
    unique = [s for s in shards if not (s in seen or seen.add(s))]
    if not unique:
        raise YingsheError(f"{spec!r} names no shards", "give a pattern such as train-{000000..000009}.tar")
    return unique


def _glob(pattern: str) -> list[str]:
    if not is_url(pattern):
        return sorted(glob.glob(os.path.expanduser(pattern)))
    fs, root = _filesystem(pattern)
    protocol = pattern.split("://", 1)[0] + "://"
    return sorted(p if "://" in p else protocol + p for p in fs.glob(root))


def _filesystem(url: str):
    import fsspec

    if url.startswith(("http://", "https://")):
        use_http_backend()
    return fsspec.core.url_to_fs(url)


def use_http_backend() -> None:
    """fsspec's http(s) filesystem needs aiohttp; without it, register fsspec's requests-based
    one (same interface, synchronous) so http URLs still open."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        import fsspec.implementations.http_sync  # noqa: F401  (importing it registers http/https)


def open_shard(location: str) -> BinaryIO:
    """A seekable binary handle on a shard: `open` for a local path, fsspec for a URL."""
    if not is_url(location):
        return open(location, "rb")
    fs, path = _filesystem(location)
    try:
        return fs.open(path, "rb")
    except Exception as err:  # http clients raise their own error types
        raise _unreachable(location, err) from err


def read_bytes(location: str, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of a shard: one seek and read for a file, one range request for a URL
    (no metadata request first). A server that ignores the range and sends the whole shard is
    still read correctly, only slower."""
    if not is_url(location):
        with open(location, "rb") as handle:
            handle.seek(start)
            return handle.read(stop - start)
    fs, path = _filesystem(location)
    try:
        data = fs.cat_file(path, start=start, end=stop)
    except Exception as err:  # http clients raise their own error types
        raise _unreachable(location, err) from err
    return data[start:stop] if len(data) > stop - start else data


def shard_identity(location: str) -> str:
    """A shard's identity for a cache key: for a URL, what the server says of it (size, ETag,
    modification time), as `stat_line` does for a file."""
    fs, path = _filesystem(location)
    try:
        info = fs.info(path)
    except Exception as err:  # any client error means the shard is unreachable
        raise _unreachable(location, err) from err
    keys = ("size", "ETag", "etag", "mtime", "LastModified", "last_modified", "Last-Modified")
    return location + "\0" + "\0".join(str(info.get(k)) for k in keys if info.get(k) is not None) + "\n"


def _unreachable(location: str, err: BaseException) -> YingsheError:
    return YingsheError(
        f"cannot open the shard {location} ({type(err).__name__}: {err})",
        "check the URL, that the server is up and answers range requests, and the fsspec backend "
        "for the protocol is installed",
    )

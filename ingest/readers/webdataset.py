"""img2dataset webdataset shards (`KEY.jpg|jpeg|png|webp` + `KEY.txt` + optional `KEY.json`).

Shards are streamed with the stdlib tarfile (no extraction to disk). As in the webdataset
convention, the files of one sample are consecutive members sharing the KEY before the first dot
of the member's base name.
"""

from __future__ import annotations

import glob
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence

from ..sample import Sample, Skipped
from .base import derive_source, is_unsafe_member, parse_meta

WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_WANTED = (*WDS_IMAGE_EXTS, "txt", "json")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_GLOB = re.compile(r"[*?\[]")
_MAX_EXPANSION = 1_000_000


def _numeric_range(a: str, b: str) -> list[str]:
    lo, hi = int(a), int(b)
    if abs(hi - lo) >= _MAX_EXPANSION:
        raise ValueError(f"brace range {{{a}..{b}}} is too large")
    padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (a, b))
    width = max(len(a), len(b)) if padded else 0
    step = 1 if hi >= lo else -1
    return [str(n).zfill(width) for n in range(lo, hi + step, step)]


def expand_braces(pattern: str) -> list[str]:
    """Expand `{00000..00009}` (zero padding kept) and `{a,b}` groups, nested ones included.

    Braces that are neither a numeric range nor a comma list stay literal, as in bash.
    """
    start = pattern.find("{")
    while start != -1:
        depth, end, commas = 0, -1, []
        for i in range(start, len(pattern)):
            c = pattern[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
            elif c == "," and depth == 1:
                commas.append(i)
        if end == -1:
            return [pattern]
        body, head, tail = pattern[start + 1 : end], pattern[:start], pattern[end + 1 :]
        m = _RANGE.match(body)
        if m:
            alts = _numeric_range(m.group(1), m.group(2))
        elif commas:
            cuts = [start, *commas, end]
            alts = [pattern[cuts[i] + 1 : cuts[i + 1]] for i in range(len(cuts) - 1)]
        else:
            start = pattern.find("{", start + 1)
            continue
        return [out for alt in alts for out in expand_braces(head + alt + tail)]
    return [pattern]


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths from brace patterns, globs, directories (their `*.tar`) or plain paths."""
    out: list[str] = []
    for s in [spec] if isinstance(spec, str) else spec:
        for p in expand_braces(s):
            if os.path.isdir(p):
                out.extend(sorted(glob.glob(os.path.join(glob.escape(p), "*.tar"))))
            elif _GLOB.search(p):
                out.extend(sorted(glob.glob(p)))
            else:
                out.append(p)
    return out


class WebDatasetReader:
    """Streams samples out of one or more webdataset `.tar` shards."""

    def __init__(self, shards: str | Sequence[str], *, source: str | None = None) -> None:
        self.shards = expand_shards(shards)
        if not any(os.path.isfile(s) for s in self.shards):
            raise ValueError(f"no webdataset shard (.tar) found for {shards!r}")
        first = shards if isinstance(shards, str) else shards[0]
        self.source = source or derive_source(first, parent=not os.path.isdir(first))

    def estimate(self) -> int | None:
        return None  # counting samples would mean reading every shard once more

    def __iter__(self) -> Iterator[Sample | Skipped]:
        for shard in self.shards:
            yield from self._read_shard(shard)

    def _read_shard(self, shard: str) -> Iterator[Sample | Skipped]:
        name = os.path.basename(shard)
        if not os.path.isfile(shard):
            yield Skipped(name, "missing_shard", shard)
            return
        key: str | None = None
        group: dict[str, tuple[str, bytes]] = {}
        seen: set[str] = set()
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for m in tar:
                    if m.isdir():
                        continue
                    member = m.name
                    while member.startswith("./"):
                        member = member[2:]
                    if is_unsafe_member(member):
                        yield Skipped(f"{name}/{member}", "unsafe_path", f"{shard}::{m.name}")
                        continue
                    if not m.isfile():
                        yield Skipped(f"{name}/{member}", "unsafe_path", "link or special member")
                        continue
                    folder, _, base = member.rpartition("/")
                    stem, _, ext = base.partition(".")
                    k = f"{folder}/{stem}" if folder else stem
                    if k != key:
                        if key is not None:
                            yield self._sample(shard, key, group, seen)
                        key, group = k, {}
                    ext = ext.lower()
                    if ext in _WANTED and ext not in group:
                        f = tar.extractfile(m)
                        group[ext] = (member, f.read() if f else b"")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            yield Skipped(name, "bad_shard", f"{shard}: {e}")
        if key is not None:
            yield self._sample(shard, key, group, seen)

    def _sample(
        self, shard: str, key: str, group: dict[str, tuple[str, bytes]], seen: set[str]
    ) -> Sample | Skipped:
        k = f"{os.path.basename(shard)}/{key}"
        if key in seen:
            return Skipped(k, "duplicate_key", f"{shard}: members of {key} are not consecutive")
        seen.add(key)
        img = next((e for e in WDS_IMAGE_EXTS if e in group), None)
        if img is None:
            return Skipped(k, "missing_image", f"{shard}: {key} has no image member")
        if "txt" not in group:
            return Skipped(k, "missing_caption", f"{shard}::{group[img][0]} has no .txt")
        try:
            caption = group["txt"][1].decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return Skipped(k, "bad_caption", f"{shard}::{group['txt'][0]}: not UTF-8 ({e.reason})")
        meta = {}
        if "json" in group:
            parsed = parse_meta(group["json"][1], k, f"{shard}::{group['json'][0]}")
            if isinstance(parsed, Skipped):
                return parsed
            meta = parsed
        member, data = group[img]
        return Sample(key=k, image_ref=f"{shard}::{member}", caption=caption,
                      image_bytes=data, meta=meta, source=self.source)

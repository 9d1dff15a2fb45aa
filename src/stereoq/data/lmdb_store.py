"""Packed stereo samples in LMDB: record format, disparity codecs, safe writing and reading.

An LMDB directory holds one msgpack record per sample under keys ``00000000``, ``00000001``, ...
and a JSON metadata record under ``__meta__`` (format version, count, shapes, source, disparity
encoding, ``complete``). A pack writes into ``<name>.partial`` and renames it to ``<name>`` only
after the last sample and ``complete: true`` are committed, so nothing readable as complete is left
by an interrupted pack. Records: ``name``, ``left``/``right`` (lossless image file bytes, PNG),
``disp`` (encoded with the codec named in the metadata), ``h``, ``w``; benchmark records add
``noc`` (the non-occlusion mask as a 1-bit-per-pixel 8-bit PNG, 255 = non-occluded) and
``calib`` (a dict of numbers, see ``benchmarks.calibration_record``). Both are optional keys, so
format version 1 stays: readers that predate them ignore them.

Disparity codecs:
- ``png16``: uint16 PNG of ``round(disp * 256)``: error at most 1/512 px; 0 = invalid, and values
  at or beyond 65535/256 (~256 px) are stored as invalid. Several times smaller than float32.
- ``float32``: the float32 bytes split into four byte planes and zlib-compressed: exact.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import cv2
import lmdb
import msgpack
import numpy as np

from stereoq.data.sceneflow import clean_disparity, decode_image
from stereoq.errors import StereoqError

FORMAT = "stereoq-stereo-lmdb"
FORMAT_VERSION = 1
META_KEY = b"__meta__"
PARTIAL_SUFFIX = ".partial"
DISP_CODECS = ("png16", "float32")
PNG16_SCALE = 256.0
_INITIAL_MAP_BYTES = 1 << 30


def sample_key(index: int) -> bytes:
    return b"%08d" % index


# ---------------------------------------------------------------- disparity codecs


def encode_disparity(disp: np.ndarray, codec: str) -> bytes:
    """float32 (H, W) px (invalid = 0) -> bytes in ``codec`` (see the module docstring)."""
    disp = clean_disparity(disp)
    if codec == "png16":
        scaled = np.rint(disp * PNG16_SCALE)
        scaled[(scaled < 1) | (scaled > 65535)] = 0
        ok, buf = cv2.imencode(".png", scaled.astype(np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise StereoqError("could not PNG-encode a disparity map")
        return buf.tobytes()
    if codec == "float32":
        planes = np.ascontiguousarray(disp, "<f4").view(np.uint8).reshape(-1, 4).T
        return zlib.compress(np.ascontiguousarray(planes).tobytes(), 6)
    raise StereoqError(f"disparity codec {codec!r}: expected one of {', '.join(DISP_CODECS)}")


def decode_disparity(data: bytes, codec: str, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`encode_disparity` -> float32 (H, W) px."""
    if codec == "png16":
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype != np.uint16 or img.shape != (height, width):
            raise StereoqError("packed disparity is not a uint16 PNG of the recorded size")
        return img.astype(np.float32) / np.float32(PNG16_SCALE)
    if codec == "float32":
        planes = np.frombuffer(zlib.decompress(data), np.uint8).reshape(4, -1)
        return np.ascontiguousarray(planes.T).view("<f4").reshape(height, width).astype(np.float32)
    raise StereoqError(f"disparity codec {codec!r}: expected one of {', '.join(DISP_CODECS)}")


# ---------------------------------------------------------------- records


def encode_record(name: str, left: bytes, right: bytes, disp: bytes, height: int,
                  width: int, noc: np.ndarray | None = None,
                  calib: dict[str, float] | None = None) -> bytes:
    rec: dict[str, Any] = {"name": name, "left": left, "right": right, "disp": disp,
                           "h": height, "w": width}
    if noc is not None:
        ok, buf = cv2.imencode(".png", np.where(noc, 255, 0).astype(np.uint8),
                               [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise StereoqError("could not PNG-encode a non-occlusion mask")
        rec["noc"] = buf.tobytes()
    if calib is not None:
        rec["calib"] = {k: float(v) for k, v in calib.items()}
    return msgpack.packb(rec, use_bin_type=True)


def decode_record(blob: bytes, codec: str, label: str) -> dict[str, Any]:
    """A record -> the sample dict (uint8 RGB images, float32 (H, W) disparity, name)."""
    rec = msgpack.unpackb(blob, raw=False)
    h, w = int(rec["h"]), int(rec["w"])
    sample = {
        "left": decode_image(rec["left"], f"{label} left"),
        "right": decode_image(rec["right"], f"{label} right"),
        "disp": decode_disparity(rec["disp"], codec, h, w),
        "name": rec["name"],
    }
    if "noc" in rec:
        mask = cv2.imdecode(np.frombuffer(rec["noc"], np.uint8), cv2.IMREAD_GRAYSCALE)
        if mask is None or mask.shape != (h, w):
            raise StereoqError(f"{label}: packed non-occlusion mask is not a {w}x{h} PNG")
        sample["noc"] = mask == 255
    if "calib" in rec:
        sample["calib"] = dict(rec["calib"])
    return sample


# ---------------------------------------------------------------- writing


class LmdbWriter:
    """Writes records in order into ``<final>.partial`` and publishes it as ``<final>`` when done.

    ``metadata`` (a JSON-able dict with ``fingerprint``) describes what is packed; an existing
    partial directory with the same fingerprint is resumed after its last committed record, any
    other is rebuilt from scratch.
    """

    def __init__(self, final: Path, metadata: dict[str, Any], commit_every: int = 32) -> None:
        self.final = Path(final)
        self.partial = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        self.meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
                     "complete": False, "written": 0}
        self.commit_every = commit_every
        self.env: lmdb.Environment | None = None
        self._pending: list[tuple[bytes, bytes]] = []

    def open(self) -> int:
        """Open (resuming where possible); returns how many records are already in."""
        resumed = 0
        if self.partial.exists():
            old = _read_meta_at(self.partial)
            if old and old.get("fingerprint") == self.meta.get("fingerprint"):
                resumed = int(old.get("written", 0))
                for key in ("shapes", "bytes"):
                    if key in old:
                        self.meta[key] = old[key]
            release(self.partial)
            if resumed == 0:
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.partial), map_size=_INITIAL_MAP_BYTES, subdir=True,
                             readahead=False, meminit=False)
        map_bytes = self.env.info()["map_size"]
        used = self.env.stat()["psize"] * (self.env.info()["last_pgno"] + 1)
        if used * 2 > map_bytes:
            self.env.set_mapsize(max(map_bytes, used * 2))
        self.meta["written"] = resumed
        return resumed

    def add(self, record: bytes) -> None:
        """Queue the next record; committed in batches together with the progress count."""
        self._pending.append((sample_key(self.meta["written"] + len(self._pending)), record))
        if len(self._pending) >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self.meta["written"] += len(self._pending)
        self._put(self._pending + [(META_KEY, _dump_meta(self.meta))])
        self._pending = []

    def finish(self, overwrite: bool = False) -> None:
        """Commit the rest, mark complete, and move ``.partial`` into place."""
        self.flush()
        self.meta["complete"] = True
        self.meta["count"] = self.meta["written"]
        self._put([(META_KEY, _dump_meta(self.meta))])
        assert self.env is not None
        self.env.sync(True)
        self.env.close()
        self.env = None
        if self.final.exists():
            release(self.final)
            if not overwrite:
                raise StereoqError(f"{self.final} appeared while packing; not overwritten")
            old = self.final.with_name(self.final.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            self.final.rename(old)
            self.partial.rename(self.final)
            shutil.rmtree(old)
        else:
            self.partial.rename(self.final)

    def close(self) -> None:
        """Leave the partial directory as it is (an interrupted pack resumes from it)."""
        if self.env is not None:
            self.env.close()
            self.env = None

    def _put(self, items: list[tuple[bytes, bytes]]) -> None:
        assert self.env is not None
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)


def _dump_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, default=str).encode("utf-8")


# One read-only environment per LMDB file and process: LMDB refuses to open the same file twice
# in a process. Keyed by inode too, so a directory rebuilt with --overwrite is opened afresh.
_READ_ENVS: dict[tuple[int, str, int], lmdb.Environment] = {}


def open_env(path: Path) -> lmdb.Environment:
    """A shared read-only environment on the LMDB directory ``path`` (no metadata check)."""
    data = Path(path) / "data.mdb"
    pid = os.getpid()
    key = (pid, str(data.resolve()), data.stat().st_ino)
    # Environments inherited through fork (DataLoader workers) must not be used here, and py-lmdb
    # counts them as open: close this process's copies first.
    for stale in [k for k in _READ_ENVS if k[0] != pid]:
        _READ_ENVS.pop(stale).close()
    env = _READ_ENVS.get(key)
    if env is None:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True,
                        max_readers=512)
        _READ_ENVS[key] = env
    return env


def release(path: Path) -> None:
    """Close this process's cached read-only environment on ``path``, if any (before writing
    to, renaming or deleting it)."""
    data = Path(path) / "data.mdb"
    try:
        ino = data.stat().st_ino
    except OSError:
        return
    for key in [k for k in _READ_ENVS if k[2] == ino]:
        _READ_ENVS.pop(key).close()


def _read_meta_at(path: Path) -> dict[str, Any] | None:
    """The metadata of an LMDB directory, or None when it has none or cannot be opened."""
    if not (path / "data.mdb").is_file():
        return None
    try:
        with open_env(path).begin() as txn:
            raw = txn.get(META_KEY)
        return json.loads(raw) if raw else None
    except (lmdb.Error, OSError, ValueError):
        return None


# ---------------------------------------------------------------- reading


def pack_hint(path: Path) -> str:
    split = "test" if path.name.startswith("test") else "train"
    return (f"stereoq pack --split-name {split} --pack-type lmdb --target-data-dir {path.parent} "
            "(with --src-data-dir or --source synthetic)")


def read_meta(path: Path) -> dict[str, Any]:
    """Metadata of a complete packed LMDB; one-line errors for missing or incomplete ones."""
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if not path.exists():
        if partial.exists():
            raise StereoqError(
                f"LMDB {path} is incomplete (a pack that did not finish left {partial}); "
                f"rerun `{pack_hint(path)}` to finish it"
            )
        raise StereoqError(f"LMDB {path}: no such directory; create it with `{pack_hint(path)}`")
    meta = _read_meta_at(path)
    if meta is None or meta.get("format") != FORMAT:
        raise StereoqError(f"LMDB {path}: not a stereoq packed dataset (no metadata record)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StereoqError(
            f"LMDB {path}: format version {meta.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION}); repack it with `{pack_hint(path)} --overwrite`"
        )
    if not meta.get("complete"):
        raise StereoqError(
            f"LMDB {path} is incomplete ({meta.get('written', 0)} samples written); "
            f"rerun `{pack_hint(path)}` to finish it"
        )
    return meta

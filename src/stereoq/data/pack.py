"""Packing a split of SceneFlow, a benchmark (raw layouts) or generated scenes into an LMDB.

Worker processes read and encode samples; the main process writes them in order (LMDB has one
writer). Progress goes to a callback so the CLI owns the display.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stereoq.data import benchmarks, generators, sceneflow, synthetic
from stereoq.data.lmdb_store import (
    PNG16_SCALE,
    LmdbWriter,
    encode_disparity,
    encode_record,
    read_meta,
)
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig

Progress = Callable[[int, int], None]

DISP_NOTES = {
    "png16": f"uint16 PNG of round(disp*{PNG16_SCALE:g}); error <= 1/512 px; 0 = invalid "
    "(non-finite, <= 0, or >= 256 px)",
    "float32": "float32, byte planes + zlib; exact; 0 = invalid (non-finite or <= 0)",
}


@dataclass(frozen=True)
class EncodedSample:
    record: bytes
    height: int
    width: int
    image_bytes: int
    disp_bytes: int


@dataclass(frozen=True)
class SceneFlowSource:
    """Samples listed in a SceneFlow list file; images are stored as their original PNG bytes."""

    root: Path
    entries: tuple[sceneflow.Entry, ...]
    list_file: Path

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> dict[str, Any]:
        return {"kind": "sceneflow", "root": str(Path(self.root).resolve()),
                "list_file": str(Path(self.list_file).resolve())}

    def fingerprint_items(self) -> list[str]:
        return [f"{e.left} {e.right} {e.disp}" for e in self.entries]

    def encode(self, index: int, codec: str) -> EncodedSample:
        entry, root = self.entries[index], Path(self.root)
        left_bytes = sceneflow.read_bytes(root / entry.left)
        right_bytes = sceneflow.read_bytes(root / entry.right)
        # Decode everything once: it validates the files and gives the shapes to compare.
        left = sceneflow.decode_image(left_bytes, str(root / entry.left))
        right = sceneflow.decode_image(right_bytes, str(root / entry.right))
        disp = sceneflow.decode_disparity(
            sceneflow.read_bytes(root / entry.disp), str(root / entry.disp)
        )
        sceneflow.check_sizes(entry, root, left, right, disp)
        return _encoded(entry.name, left_bytes, right_bytes, disp, codec)


@dataclass(frozen=True)
class BenchmarkSource:
    """Pairs of a benchmark layout (``benchmarks``); images keep their original file bytes
    except grayscale ones (ETH3D), stored as 3-channel PNGs; ``noc`` and ``calib`` are kept."""

    kind: str
    root: Path
    entries: tuple[benchmarks.Entry, ...]

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": str(Path(self.root).resolve())}

    def fingerprint_items(self) -> list[str]:
        return [f"{e.left} {e.right} {e.disp} {e.noc} {e.calib}" for e in self.entries]

    def encode(self, index: int, codec: str) -> EncodedSample:
        entry = self.entries[index]
        sample = benchmarks.load_sample(entry)
        if codec == "png16" and float(sample["disp"].max(initial=0.0)) >= 65535 / PNG16_SCALE:
            raise StereoqError(
                f"{entry.disp}: disparities up to {sample['disp'].max():.0f} px do not fit "
                "--disp-encoding png16 (below 256 px); pack with --disp-encoding float32"
            )
        images = []
        for key in ("left", "right"):
            raw = sceneflow.read_bytes(getattr(entry, key))
            decoded = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
            rgb8 = decoded is not None and decoded.ndim == 3 and decoded.shape[2] == 3 \
                and decoded.dtype == np.uint8 and raw[:4] == b"\x89PNG"
            # Grayscale (ETH3D) or other files: stored as the 3-channel PNG the readers see.
            images.append(raw if rgb8 else _png(sample[key]))
        return _encoded(entry.name, images[0], images[1], sample["disp"], codec,
                        noc=sample["noc"], calib=sample.get("calib"))


@dataclass(frozen=True)
class SyntheticSource:
    """Generated scenes ``index_offset + i`` for i < count (train: 0, test: the val offset)."""

    count: int
    height: int
    width: int
    max_disp: float
    seed: int
    index_offset: int = 0
    split: str = "train"
    generator: str = "planes"  # data.synthetic.kind
    texture_dir: Path | None = None
    objects: tuple[int, int] = generators.OBJECTS
    camera_strength: tuple[float, float] | None = generators.STRENGTH
    _render: generators.Renderer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Loads the photographs once, and fails before any worker starts.
        object.__setattr__(self, "_render", generators.renderer(
            self.generator, self.texture_dir, self.objects, self.camera_strength))

    def __len__(self) -> int:
        return self.count

    def describe(self) -> dict[str, Any]:
        described = {"kind": "synthetic", "count": self.count, "height": self.height,
                     "width": self.width, "max_disp": self.max_disp, "seed": self.seed,
                     "index_offset": self.index_offset, "generator": self.generator}
        if self.texture_dir is not None:
            described["texture_dir"] = str(Path(self.texture_dir).resolve())
        # Named only when not the default, so packs made before these options keep their
        # fingerprint (and an interrupted one still resumes).
        for name, value in generators.scene_options(self.objects, self.camera_strength).items():
            described[name] = None if value is None else list(value)
        return described

    def fingerprint_items(self) -> list[str]:
        return [json.dumps(self.describe(), sort_keys=True)]

    def encode(self, index: int, codec: str) -> EncodedSample:
        left, right, disp = self._render(
            self.seed, self.index_offset + index, self.height, self.width, self.max_disp
        )
        name = f"synthetic/{'val' if self.split == 'test' else 'train'}/{index:06d}"
        return _encoded(name, _png(left), _png(right), disp, codec)


@dataclass(frozen=True)
class SyntheticOverrides:
    """Values that replace the config's ``data.synthetic`` ones for one pack (None: keep)."""

    count: int | None = None
    height: int | None = None
    width: int | None = None
    max_disp: float | None = None
    seed: int | None = None


def make_source(
    kind: str,
    split: str,
    data: DataConfig,
    root: Path | None = None,
    list_file: Path | None = None,
    num_samples: int | None = None,
    synthetic_overrides: SyntheticOverrides = SyntheticOverrides(),
) -> SceneFlowSource | BenchmarkSource | SyntheticSource:
    """The samples of ``split`` ("train" or "test") to pack from a raw layout (``root``: a
    benchmark's or SceneFlow's folder) or the generator (``kind`` "synthetic", sized by
    ``data.synthetic`` unless overridden); the first ``num_samples`` only when given."""
    if kind in benchmarks.layouts():
        entries = benchmarks.split_entries(
            benchmarks.find_entries(kind, root), split, data.val_every
        )
        return BenchmarkSource(kind, root, tuple(entries[:num_samples]))
    if kind == "sceneflow":
        path = sceneflow.list_path(root, split, list_file)
        entries = sceneflow.read_list(path)[:num_samples]
        sceneflow.check_files(root, entries, path)
        return SceneFlowSource(root, tuple(entries), path)
    syn, o = data.synthetic, synthetic_overrides
    total = o.count or (syn.train_count if split == "train" else syn.val_count)
    return SyntheticSource(
        count=min(total, num_samples) if num_samples is not None else total,
        height=o.height or syn.height,
        width=o.width or syn.width,
        max_disp=o.max_disp or syn.max_disp,
        seed=syn.seed if o.seed is None else o.seed,
        index_offset=0 if split == "train" else synthetic.VAL_INDEX_OFFSET,
        split=split,
        generator=syn.kind,
        texture_dir=syn.texture_dir,
        objects=syn.objects,
        camera_strength=syn.camera_strength,
    )


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise StereoqError("could not PNG-encode an image")
    return buf.tobytes()


def _encoded(name: str, left: bytes, right: bytes, disp: np.ndarray, codec: str,
             noc: np.ndarray | None = None, calib: dict[str, float] | None = None) -> EncodedSample:
    disp_bytes = encode_disparity(disp, codec)
    h, w = disp.shape
    return EncodedSample(encode_record(name, left, right, disp_bytes, h, w, noc, calib), h, w,
                         len(left) + len(right), len(disp_bytes))


@dataclass
class PackReport:
    """What a pack wrote; byte figures are for this LMDB against raw float32 disparity."""

    path: Path
    samples: int
    resumed: int
    seconds: float
    stored_bytes: int
    image_bytes: int
    disp_bytes: int
    raw_disp_bytes: int
    shapes: dict[str, int] = field(default_factory=dict)
    disp_encoding: str = "png16"

    @property
    def bytes_per_sample(self) -> float:
        return self.stored_bytes / max(self.samples, 1)

    @property
    def reference_bytes_per_sample(self) -> float:
        """The reference layout: the same PNG images plus raw float32 disparity."""
        return (self.stored_bytes - self.disp_bytes + self.raw_disp_bytes) / max(self.samples, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "samples": self.samples, "resumed": self.resumed,
            "seconds": round(self.seconds, 3), "stored_bytes": self.stored_bytes,
            "image_bytes": self.image_bytes, "disp_bytes": self.disp_bytes,
            "raw_float32_disp_bytes": self.raw_disp_bytes,
            "bytes_per_sample": round(self.bytes_per_sample, 1),
            "reference_float32_bytes_per_sample": round(self.reference_bytes_per_sample, 1),
            "shapes": self.shapes, "disp_encoding": self.disp_encoding,
        }


Source = SceneFlowSource | BenchmarkSource | SyntheticSource

# Set in each worker by the pool initializer, so tasks carry only an index.
_WORKER: tuple[Source, str] | None = None


def _init_worker(source: Source, codec: str) -> None:
    global _WORKER
    _WORKER = (source, codec)
    # Ctrl-C reaches the whole process group; the main process stops the pool, so workers
    # ignore it rather than print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One process per core already; OpenCV's own threads would only compete with the others.
    cv2.setNumThreads(1)


def _encode_in_worker(index: int) -> EncodedSample:
    assert _WORKER is not None
    source, codec = _WORKER
    return source.encode(index, codec)


def target_path(target_dir: Path, split: str) -> Path:
    """``OUT/train_lmdb`` or ``OUT/test_lmdb``."""
    return Path(target_dir) / f"{split}_lmdb"


def check_target(target_dir: Path, split: str, overwrite: bool) -> Path:
    """The target LMDB path; refuses an existing one unless ``overwrite``."""
    final = target_path(target_dir, split)
    if final.exists() and not overwrite:
        try:
            meta = read_meta(final)
            what = f"holds {meta.get('count')} samples"
        except StereoqError:
            what = "exists"
        raise StereoqError(f"{final} already {what}; pass --overwrite to rebuild it", exit_code=2)
    return final


def pack(
    source: Source,
    target_dir: Path,
    split: str,
    num_workers: int = 1,
    disp_encoding: str = "png16",
    overwrite: bool = False,
    progress: Progress | None = None,
    commit_every: int = 32,
) -> PackReport:
    """Pack every sample of ``source`` into ``target_dir/<split>_lmdb``.

    Resumes an interrupted pack of the same source; refuses an existing complete target unless
    ``overwrite``. ``progress(done, total)`` is called as samples are written; records are
    committed (and become resumable) every ``commit_every`` samples.
    """
    final = check_target(target_dir, split, overwrite)
    total = len(source)
    fingerprint = hashlib.sha256(
        "\n".join([split, disp_encoding, *source.fingerprint_items()]).encode()
    ).hexdigest()
    writer = LmdbWriter(final, {
        "split": split, "source": source.describe(), "fingerprint": fingerprint,
        "disp_encoding": disp_encoding, "disp_note": DISP_NOTES[disp_encoding],
        "image_encoding": "png (lossless; SceneFlow frames keep their original file bytes)",
        "color": "rgb", "total": total,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, commit_every=commit_every)
    start = writer.open()
    shapes: dict[str, int] = dict(writer.meta.get("shapes", {}))
    sizes = dict(writer.meta.get("bytes", {"stored": 0, "images": 0, "disp": 0, "raw_disp": 0}))
    began = time.perf_counter()
    indices = range(start, total)
    # The workers start before the first progress call, so a progress display that starts a
    # thread on that call is not running while they fork.
    pool = _start_pool(source, disp_encoding, num_workers, len(indices))
    try:
        encoded: Iterator[EncodedSample] = (
            pool.imap(_encode_in_worker, indices, chunksize=2) if pool is not None
            else (source.encode(i, disp_encoding) for i in indices)
        )
        if progress:
            progress(start, total)
        for done, enc in enumerate(encoded, start=start + 1):
            key = f"{enc.height}x{enc.width}"
            shapes[key] = shapes.get(key, 0) + 1
            sizes["stored"] += len(enc.record)
            sizes["images"] += enc.image_bytes
            sizes["disp"] += enc.disp_bytes
            sizes["raw_disp"] += 4 * enc.height * enc.width
            # The running figures travel with each batch commit, so a resume keeps them.
            writer.meta.update(shapes=dict(shapes), bytes=dict(sizes))
            writer.add(enc.record)
            if progress:
                progress(done, total)
        writer.meta.update(shapes=shapes, bytes=sizes)
        if len(shapes) == 1:
            h, w = next(iter(shapes)).split("x")
            writer.meta.update(height=int(h), width=int(w))
        writer.finish(overwrite=overwrite)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        writer.close()
    return PackReport(
        path=final, samples=total, resumed=start, seconds=time.perf_counter() - began,
        stored_bytes=sizes["stored"], image_bytes=sizes["images"], disp_bytes=sizes["disp"],
        raw_disp_bytes=sizes["raw_disp"], shapes=shapes, disp_encoding=disp_encoding,
    )


def _start_pool(source: Source, codec: str, num_workers: int, todo: int) -> Any | None:
    """A pool of worker processes, or None to encode in this process (``num_workers`` <= 1)."""
    if num_workers <= 1 or todo < 2:
        return None
    # spawn, not fork: a child forked while another thread (OpenCV's or torch's pool) held a
    # lock can hang on it.
    ctx = mp.get_context("spawn")
    with _main_script_hidden():
        return ctx.Pool(min(num_workers, todo), initializer=_init_worker,
                        initargs=(source, codec))


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """spawn re-runs the caller's main script in every worker (the CLI's and the benchmark's
    import torch: seconds each on a busy machine). The workers need only this module, so hide
    the script's path while they start; ``python -m`` mains are skipped by spawn anyway."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path

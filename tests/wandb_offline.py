"""Read an offline W&B run (`run-<id>.wandb`) back without network, for the tests.

The file is a 7-byte header followed by LevelDB-style 32 KiB blocks; each block holds
chunks `crc32 (4) | length (2, little endian) | type (1) | payload`, where type 1 is a
whole record and 2/3/4 are the first/middle/last pieces of one. Each record is a
`wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    offset, pending = FILE_HEADER, b""
    while offset + CHUNK_HEADER <= len(data):
        space = BLOCK - offset % BLOCK
        if space < CHUNK_HEADER:  # the rest of a block too small for a header is padding
            offset += space
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        payload = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
            continue
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


@dataclass
class OfflineRun:
    run_id: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)  # logged: name, type, aliases, files {path: size}, metadata
    exit_code: int | None = None
    git: dict = field(default_factory=dict)  # what W&B records of the working directory's repository


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path, timeout: float = 30.0) -> OfflineRun:
    """The run in ``run_dir``. W&B's service process writes the file in blocks and may flush the
    last one a moment after ``finish()`` has returned: wait (up to ``timeout`` seconds) until the
    file ends with the run's exit record, then read it; a run that never finished is read as
    it stands."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            run = _read_offline_run(run_dir)
        except Exception:  # noqa: BLE001 - a block written half-way: read again
            if time.monotonic() > deadline:
                raise
            run = None
        if run is not None and (run.exit_code is not None or time.monotonic() > deadline):
            return run
        time.sleep(0.1)


def _read_offline_run(run_dir: Path) -> OfflineRun:
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group = record.run.run_id, record.run.run_group
            run.name, run.job_type, run.tags = record.run.display_name, record.run.job_type, list(record.run.tags)
            run.git = {"commit": record.run.git.commit, "remote": record.run.git.remote_url}
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "artifact":
            artifact = record.artifact
            run.artifacts.append({
                "name": artifact.name, "type": artifact.type, "aliases": set(artifact.aliases),
                "files": {entry.path: entry.size for entry in artifact.manifest.contents},
                "metadata": json.loads(artifact.metadata or "{}"),
            })  # fmt: skip
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run

"""Resumable and sharded submission files: finished rows kept as they come, shard file names and their merge.

A long stage appends each finished row to ``{out}.partial.jsonl`` (JSON lines behind a header with the run's
settings fingerprint), so a killed or failed run resumes where it stopped; a sharded run writes
``{stem}.shard{i}-of-{n}.csv``, and :func:`merge_shards` joins the shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from src.data.atomic import write_text_atomic
from src.submission.codec import SUBMISSION_COLUMNS, read_submission, write_submission


class PartialRows:
    """Append-only JSON-lines record of finished rows, tied to the config fingerprint."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            lines = path.read_text().splitlines()
            header = json.loads(lines[0]) if lines else {}
            if header.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{path} holds rows of a run with other settings; delete it to start over, or restore those settings"
                )
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be cut short
                    continue
                self.rows[row["ID"]] = row
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"fingerprint": fingerprint}) + "\n")
        self._handle = open(path, "a")

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["ID"]] = row
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def output_path(sub_path: str | os.PathLike, num_shards: int, shard_index: int) -> Path:
    """The CSV a run writes: ``sub_path`` or, when sharded, ``{stem}.shard{i}-of-{n}.csv`` beside it."""
    sub_path = Path(sub_path)
    if num_shards == 1:
        return sub_path
    return sub_path.with_name(f"{sub_path.stem}.shard{shard_index}-of-{num_shards}{sub_path.suffix}")


def merge_shards(sub_path: str | os.PathLike, num_shards: int) -> pd.DataFrame:
    """Join ``{stem}.shard{i}-of-{n}.csv`` into ``sub_path``; every shard must exist, IDs unique."""
    paths = [output_path(sub_path, num_shards, i) for i in range(num_shards)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot merge: missing shard file(s) {missing}")
    merged = pd.concat([read_submission(p) for p in paths], ignore_index=True)
    duplicated = merged["ID"][merged["ID"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"shards overlap: ID(s) {list(duplicated[:5])} appear in more than one shard")
    merged = merged.sort_values("ID", kind="stable").reset_index(drop=True)
    write_submission(sub_path, merged[SUBMISSION_COLUMNS].to_dict("records"))
    return merged

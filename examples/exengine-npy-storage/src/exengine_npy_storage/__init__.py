"""An example storage plugin for napari-exengine: each frame a .npy file, metadata in
index.jsonl."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from exengine.base_classes import DataStorage
from exengine.data import DataCoordinates


class NpyFolderStorage(DataStorage):
    """Frames saved as ``<directory>/<name>/<axis>-<value>_....npy`` with an ``index.jsonl``."""

    def __init__(
        self,
        directory: str,
        name: str | None = None,
        summary_metadata: dict | None = None,
        compress: bool = False,
    ) -> None:
        self.path = os.path.join(directory, name or "npy-dataset")
        os.makedirs(self.path, exist_ok=False)
        self.compress = compress
        self._summary = dict(summary_metadata or {})
        self._frames: dict[DataCoordinates, tuple[str, Any]] = {}
        with open(os.path.join(self.path, "summary.json"), "w") as f:
            json.dump(self._summary, f)

    @property
    def summary_metadata(self) -> dict:
        return self._summary

    def __contains__(self, coords: Any) -> bool:
        return DataCoordinates(coords) in self._frames

    def put(self, coords: Any, data: np.ndarray, metadata: Any) -> None:
        coords = DataCoordinates(coords)
        if coords in self._frames:
            raise ValueError(f"Data at {dict(coords)} is already stored")
        filename = "_".join(f"{k}-{v}" for k, v in coords.items()) + (
            ".npz" if self.compress else ".npy"
        )
        target = os.path.join(self.path, filename)
        if self.compress:
            np.savez_compressed(target, data=data)
        else:
            np.save(target, data)
        with open(os.path.join(self.path, "index.jsonl"), "a") as f:
            f.write(
                json.dumps({"coords": dict(coords), "file": filename, "metadata": metadata}) + "\n"
            )
        self._frames[coords] = (target, metadata)

    def get_data(self, coords: Any) -> np.ndarray:
        target, _ = self._frames[DataCoordinates(coords)]
        return np.load(target)["data"] if self.compress else np.load(target)

    def get_metadata(self, coords: Any) -> Any:
        return self._frames[DataCoordinates(coords)][1]

    def get_coordinates_list(self) -> list[DataCoordinates]:
        return list(self._frames)

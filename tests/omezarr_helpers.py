"""What the OME-Zarr tests share: acquiring a dataset with ``exengine acquire``, and validating it
with two independent OME-NGFF 0.5 validators, ome-zarr-models and yaozarrs (their warnings, the
spec's SHOULDs, fail too)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import yaozarrs
import zarr
from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw
from ome_zarr_models.v05.image import Image

from napari_exengine.cli import main

__all__ = ["FRAME", "OMEZARR", "acquire", "validate"]

OMEZARR = "napari-exengine.storage.omezarr"
FRAME = (512, 512)  # the simulated camera's


def validate(group: zarr.Group, url: str | None = None) -> dict[str, zarr.Group]:
    """Validate the dataset (``group``; at ``url`` when in a store, which yaozarrs reads through
    fsspec) with both validators; return its images by path (``""``: the root)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yaozarrs.validate_zarr_store(
            group if url is None else yaozarrs.open_group(url, storage_options={"anon": False})
        )
    if "bioformats2raw.layout" not in group.attrs["ome"]:
        Image.from_zarr(group)
        return {"": group}
    paths = BioFormats2Raw.from_zarr(group).image_paths  # validates each image
    assert group["OME"].attrs["ome"]["series"] == paths
    return {path: group[path] for path in paths}


def acquire(directory: Path, name: str, *options: str) -> Path:
    """Run ``exengine acquire`` with OME-Zarr storage; the dataset's path."""
    out = io.StringIO()
    status = main(
        [
            "acquire",
            *options,
            "--exposure",
            "0",
            "--storage",
            OMEZARR,
            "--out",
            str(directory),
            "--name",
            name,
        ],
        stream=out,
    )
    assert status == 0, out.getvalue()
    return directory / f"{name}_1.ome.zarr"

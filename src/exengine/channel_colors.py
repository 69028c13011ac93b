"""A channel's display colour, by its dye (or laser line) when its name says one, else by its
place: the same for OME-Zarr, OME-TIFF and the napari layers."""

from __future__ import annotations

import re

__all__ = ["FALLBACK_COLORS", "channel_color", "channel_colormap"]

#: Dye (or laser line) names, their colour (``RRGGBB``) and napari's colormap of that colour,
#: checked in this order.
_DYES = (
    (("cy5", "647", "640"), "FF00FF", "magenta"),
    (("mcherry", "rfp", "texasred", "594"), "FF0000", "red"),
    (("tritc", "cy3", "568", "561", "555", "546"), "FF8000", "bop orange"),
    (("fitc", "gfp", "488"), "00FF00", "green"),
    (("dapi", "hoechst", "bfp", "405"), "0000FF", "blue"),
)
#: Colours of channels with other names, by their index (napari's reader cycles the same ones).
FALLBACK_COLORS = ("00FFFF", "FF00FF", "FFFF00", "00FF00", "FF0000", "0000FF")
_FALLBACK_COLORMAPS = ("cyan", "magenta", "yellow", "green", "red", "blue")


def _dye(label: object) -> tuple[str, str] | None:
    name = re.sub(r"[^a-z0-9]", "", str(label).lower())
    for names, color, colormap in _DYES:
        if any(n in name for n in names):
            return color, colormap
    return None


def channel_color(label: object, index: int) -> str:
    """The display colour (``RRGGBB``) of a channel named ``label``, the ``index``-th."""
    dye = _dye(label)
    return dye[0] if dye else FALLBACK_COLORS[index % len(FALLBACK_COLORS)]


def channel_colormap(label: object, index: int) -> str:
    """The name of napari's colormap for a channel named ``label``, the ``index``-th."""
    dye = _dye(label)
    return dye[1] if dye else _FALLBACK_COLORMAPS[index % len(_FALLBACK_COLORMAPS)]

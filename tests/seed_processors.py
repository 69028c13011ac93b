"""The processing functions of the seed's (``data.rst``) examples, as written there: shared by the
seed test and the Dask tests, whose worker processes import them by this module's name."""

import numpy as np


def process_function(data_coords, data, metadata):
    data[:100, :100] = 0
    metadata["new_key"] = "new_value"
    return data_coords, data, metadata


def multi_output_process(coords, data, metadata):
    data2 = np.array(data, copy=True)
    metadata2 = metadata.copy()
    metadata2["Channel"] = "New_Channel"
    return [(coords, data, metadata), (coords, data2, metadata2)]


def batch_process(coords, data, metadata):
    if not hasattr(batch_process, "images"):
        batch_process.images = []
    batch_process.images.append(data)
    if len(batch_process.images) == 10:
        np.stack(batch_process.images, axis=0)
        batch_process.images = []
    return coords, data, metadata

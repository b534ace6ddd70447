"""Read a .beton's header and labels without importing FFCV (whose import costs seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

# Mirrors ffcv.types (file format version 2) for the two fields starx writes.
_FORMAT_VERSION = 2
_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                    ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
_FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)),
                        ("arguments", ("<u1", (1024,)))], align=True)
_METADATA = {  # FFCV type id -> that field's per-sample metadata
    0: np.dtype("<f8"),  # FloatField
    1: np.dtype("<i8"),  # IntField
    2: np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")]),
}


def read_metadata(path: str | Path) -> np.ndarray:
    """The per-sample metadata table of a .beton as a structured array, one field per column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file")
    header = np.fromfile(path, dtype=_HEADER, count=1)
    if len(header) == 0 or header[0]["version"] != _FORMAT_VERSION:
        raise DataError(f"{path}: not an FFCV dataset (format version {_FORMAT_VERSION})")
    header = header[0]
    descs = np.fromfile(path, dtype=_FIELD_DESC, count=int(header["num_fields"]),
                        offset=_HEADER.itemsize)
    names, types = [], []
    for d in descs:
        name = bytes(d["name"]).split(b"\0", 1)[0].decode("ascii")
        if int(d["type_id"]) not in _METADATA:
            raise DataError(f"{path}: field {name!r} has a type starx does not read")
        names.append(name)
        types.append(_METADATA[int(d["type_id"])])
    dtype = np.dtype([(n, t) for n, t in zip(names, types)], align=True)
    count = int(header["num_samples"])
    meta = np.fromfile(path, dtype=dtype, count=count, offset=_HEADER.itemsize + descs.nbytes)
    if len(meta) != count:
        raise DataError(f"{path}: truncated file ({len(meta)} of {count} samples)")
    return meta


def dataset_info(path: str | Path) -> tuple[int, int]:
    """(number of images, number of classes = largest label + 1) of a starx .beton."""
    meta = read_metadata(path)
    if "label" not in meta.dtype.names:
        raise DataError(f"{path}: no 'label' field (fields: {meta.dtype.names})")
    labels = meta["label"]
    return len(meta), (int(labels.max()) + 1 if len(labels) else 0)


def max_image_side(path: str | Path) -> int:
    """Largest stored width or height, e.g. to skip centre-cropping small images."""
    meta = read_metadata(path)["image"]
    return int(max(meta["width"].max(initial=0), meta["height"].max(initial=0)))


_ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])


def read_samples(path: str | Path, indices=None) -> list[tuple[np.ndarray, int]]:
    """Decode stored samples `(HxWx3 uint8, label)` straight from the file, without FFCV:
    for inspection and tests (the loaders are the fast path)."""
    import io

    from PIL import Image

    path = Path(path)
    meta = read_metadata(path)
    header = np.fromfile(path, dtype=_HEADER, count=1)[0]
    alloc = np.fromfile(path, dtype=_ALLOC, offset=int(header["alloc_table_ptr"]))
    size_at = dict(zip(alloc["ptr"].tolist(), alloc["size"].tolist()))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = []
    for i in range(len(meta)) if indices is None else indices:
        m = meta[i]["image"]
        ptr, (h, w) = int(m["data_ptr"]), (int(m["height"]), int(m["width"]))
        blob = data[ptr: ptr + size_at[ptr]]
        if m["mode"] == 0:  # JPEG
            image = np.asarray(Image.open(io.BytesIO(blob.tobytes())).convert("RGB"))
        else:
            image = np.array(blob[: h * w * 3]).reshape(h, w, 3)
        out.append((image, int(meta[i]["label"])))
    return out

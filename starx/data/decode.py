"""FFCV decoder whose random crop and flip are a pure function of (seed, epoch, image index).

FFCV's own RandomResizedCrop draws from numba's thread-local generators, which
nobody seeds, so two runs never agree. Here every image gets its own counter-
based stream (splitmix64 of a per-epoch key and the image index): the result is
the same whichever thread decodes it and whichever batch it lands in, so a
resumed run sees exactly the crops it would have seen.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import ctypes_memcopy, imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler
from numba import njit, set_parallel_chunksize

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """Python twin of `_mix`, used to derive per-epoch keys."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def epoch_key(seed: int, epoch: int) -> int:
    """64-bit key of one (seed, epoch); every image's randomness derives from it."""
    return splitmix64(splitmix64(seed & _MASK64) ^ (epoch & _MASK64))


@njit(nogil=True)
def _mix(x):
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(nogil=True)
def _uniform(key, counter):
    """Uniform [0, 1) number `counter` of the stream `key` (53 random bits)."""
    return float(_mix(key ^ (np.uint64(counter) * _GOLDEN)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(nogil=True)
def seeded_crop(height, width, params, key):
    """torchvision's RandomResizedCrop.get_params (10 tries, then a centre crop), drawn from `key`.

    params = (min scale, max scale, log min ratio, log max ratio).
    """
    area = height * width
    for attempt in range(10):
        target_area = area * (params[0] + (params[1] - params[0]) * _uniform(key, 4 * attempt))
        aspect = np.exp(params[2] + (params[3] - params[2]) * _uniform(key, 4 * attempt + 1))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(_uniform(key, 4 * attempt + 2) * (height - h + 1))
            j = int(_uniform(key, 4 * attempt + 3) * (width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < np.exp(params[2]):
        w = width
        h = int(round(w / np.exp(params[2])))
    elif in_ratio > np.exp(params[3]):
        h = height
        w = int(round(h * np.exp(params[3])))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@njit(nogil=True)
def center_crop(height, width, params, key):
    """Square centre crop of side params[0] * the shorter side (FFCV's, no randomness)."""
    side = int(params[0] * min(height, width))
    return (height - side) // 2, (width - side) // 2, side, side


@njit(nogil=True)
def dct_scale(h, w, out_h, out_w):
    """Largest shrink k/8 (k = 1, 2, 4 or 8) at which an h x w crop still covers out_h x out_w.

    Only the power-of-two factors: libjpeg-turbo's other scaled IDCTs are not SIMD and
    were slower than a full decode here. So this only kicks in for crops at least twice
    the output size (large source images).
    """
    k = 1
    while k < 8 and (h * k < 8 * out_h or w * k < 8 * out_w):
        k *= 2
    return k


@njit(nogil=True)
def flip_rows(image):
    """Mirror an HxWxC image left-right, in place."""
    width = image.shape[1]
    for r in range(image.shape[0]):
        for c in range(width // 2):
            for ch in range(image.shape[2]):
                tmp = image[r, c, ch]
                image[r, c, ch] = image[r, width - 1 - c, ch]
                image[r, width - 1 - c, ch] = tmp


# Compiled helpers are never freed: with numba 0.68, collecting the imdecode dispatcher of
# a finished loader raises KeyErrors in numba's finalizer once another loader has compiled
# its own, and sharing one dispatcher between loaders fails outright.
_KEEP_ALIVE: list = []


def _compiled(fn):
    compiled = Compiler.compile(fn)
    _KEEP_ALIVE.append(compiled)
    return compiled


class _CropDecoder(ResizedCropRGBImageDecoder):
    """Decode, crop with `crop_fn(height, width, params, key)`, resize to `output_size`,
    maybe flip. The per-epoch key lives in a small array that the compiled code reads
    through its address: numba freezes arrays captured directly as constants, and the key
    must change every epoch without recompiling."""

    crop_fn = None

    def __init__(self, output_size, params, hflip):
        super().__init__(output_size)
        self.params = np.asarray(params, dtype=np.float64)
        self.hflip = hflip
        self._key = np.zeros(1, dtype=np.uint64)

    def set_epoch(self, seed: int, epoch: int) -> None:
        self._key[0] = epoch_key(seed, epoch)

    @property
    def get_crop_generator(self):  # abstract in the base class; we use crop_fn
        return self.crop_fn

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c, resize_crop_c = _compiled(imdecode), _compiled(resize_crop)
        crop, params, hflip = type(self).crop_fn, self.params, self.hflip
        out_h, out_w = self.output_size
        key_address = self._key.ctypes.data

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            key_now = np.empty(1, dtype=np.uint64)
            ctypes_memcopy(key_address, key_now.ctypes.data, 8)
            # Small dynamic chunks: image sizes (so decode times) vary, static halves don't.
            set_parallel_chunksize(2)
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                key = _mix(key_now[0] ^ (np.uint64(source_ix) * _GOLDEN))
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                i, j, h, w = crop(height, width, params, key)
                if field["mode"] == jpg:
                    # Let libjpeg-turbo decode at k/8 scale when the crop stays at least the
                    # output size: less IDCT work, and a good anti-aliased shrink.
                    k = dct_scale(h, w, out_h, out_w)
                    sh, sw = (height * k + 7) // 8, (width * k + 7) // 8
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width,
                               0, 0, k, 8, False, False)
                    temp_buffer = temp_buffer.reshape(-1)[: 3 * sh * sw].reshape(sh, sw, 3)
                    i, j = i * k // 8, j * k // 8
                    h, w = min((h * k + 7) // 8, sh - i), min((w * k + 7) // 8, sw - j)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
                if hflip and _uniform(key, 64) < 0.5:
                    flip_rows(destination[dst_ix])
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode


class SeededRandomResizedCrop(_CropDecoder):
    """Random resized crop (torchvision semantics) + optional horizontal flip, reproducible
    per (seed, epoch, image index); call `set_epoch` before each epoch."""

    crop_fn = seeded_crop

    def __init__(self, output_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=True):
        super().__init__(output_size, (*scale, *np.log(ratio)), hflip)


class CenterCrop(_CropDecoder):
    """Centre crop of `ratio` x the shorter side, resized to `output_size` (evaluation)."""

    crop_fn = center_crop

    def __init__(self, output_size, ratio=224 / 256):
        super().__init__(output_size, (ratio,), hflip=False)

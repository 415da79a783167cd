"""Interchange formats: read and write COCO, YOLO, Pascal VOC, Label Studio, ImageFolder and
Hugging Face ``datasets`` through one neutral model (:mod:`labelloop.formats.model`).

A stage: it knows nothing of projects. Readers return a :class:`Collection`; writers take one.
A bad file is a :class:`labelloop.errors.ValidationError` that names the file, the record or
line, and the fix, raised before anything is returned (nothing half-read). ``datasets`` and
``yaml`` are imported only by the functions that need them.
"""

from .coco import read_coco, write_coco
from .hf import read_hf, write_hf
from .imagefolder import IMAGE_EXTENSIONS, read_imagefolder, write_imagefolder
from .labelstudio import labelstudio_config, read_labelstudio, write_labelstudio
from .match import match_paths
from .model import Box, Collection, Record, image_size, write_text_atomic
from .voc import read_voc, write_voc
from .yolo import read_yolo, write_yolo

__all__ = [
    "Box",
    "Collection",
    "IMAGE_EXTENSIONS",
    "Record",
    "image_size",
    "labelstudio_config",
    "match_paths",
    "read_coco",
    "read_hf",
    "read_imagefolder",
    "read_labelstudio",
    "read_voc",
    "read_yolo",
    "write_coco",
    "write_hf",
    "write_imagefolder",
    "write_labelstudio",
    "write_text_atomic",
    "write_voc",
    "write_yolo",
]

"""Interchange formats: read and write COCO, YOLO, Pascal VOC, Label Studio, ImageFolder and
Hugging Face ``datasets`` through one neutral model (:mod:`labelloop.formats.model`).

A stage: it knows nothing of projects. Readers return a :class:`Collection`; writers take one.
A bad file is a :class:`labelloop.errors.ValidationError` that names the file, the record or
line, and the fix, raised before anything is returned (nothing half-read). ``datasets`` and
``yaml`` are imported only by the functions that need them.
"""

from importlib import import_module

#: name -> submodule: imported on first use, so importing one format (``ingest`` needs
#: ImageFolder's extensions) does not import them all (Label Studio's XML alone took 30 ms)
_WHERE = {
    "read_coco": "coco", "write_coco": "coco",
    "read_hf": "hf", "write_hf": "hf",
    "IMAGE_EXTENSIONS": "imagefolder", "read_imagefolder": "imagefolder", "write_imagefolder": "imagefolder",
    "labelstudio_config": "labelstudio", "read_labelstudio": "labelstudio", "write_labelstudio": "labelstudio",
    "match_paths": "match",
    "Box": "model", "Collection": "model", "Record": "model", "image_size": "model",
    "write_text_atomic": "model",
    "read_voc": "voc", "write_voc": "voc",
    "read_yolo": "yolo", "write_yolo": "yolo",
}

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


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labelloop.formats' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

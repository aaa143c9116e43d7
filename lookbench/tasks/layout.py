"""Where an image-folder task's files must lie, checked without torch (``lookbench run``
checks it before anything heavy is imported; ``imagefolder_data`` reads the folder after)."""

from __future__ import annotations

from pathlib import Path

from lookbench.tasks.base import DataUnavailable

SPLITS = ("train", "val")


def layout_hint(root: Path) -> str:
    return (f"expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg (JPEG or PNG, one "
            f"folder per class, the same class folders in both)")


def find_image_folder(root: Path) -> None:
    """Raise :class:`DataUnavailable` when ``root`` or one of its split folders is missing."""
    if not root.is_dir():
        raise DataUnavailable(f"no image folder at {root}: {layout_hint(root)}")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataUnavailable(f"{root / split} is missing: {layout_hint(root)}")

"""The EXIF a TIFF carries, as the EXIF block a PNG, JPEG or WebP output takes.

A JPEG, PNG or WebP holds its EXIF as one block (Pillow's `info["exif"]`), which outputs copy as it is. A TIFF
has no such block: Make, Model, Software and the pointers to the Exif and GPS sub-IFDs sit in its first IFD
beside the tags that lay out its pixels (width, compression, strip offsets, bits per sample). Those describe
the TIFF's own bytes and would be wrong, or misread, in another file, so only the descriptive tags and the
sub-IFDs are kept. Orientation is not among them: the pixels are already turned upright.
"""

from __future__ import annotations

import struct

from PIL import ExifTags, Image

DESCRIPTIVE_TAGS = (
    ExifTags.Base.ImageDescription,
    ExifTags.Base.Make,
    ExifTags.Base.Model,
    ExifTags.Base.Software,
    ExifTags.Base.DateTime,
    ExifTags.Base.Artist,
    ExifTags.Base.HostComputer,
    ExifTags.Base.Copyright,
)
"""First-IFD tags that say who made the photo, with what and when: what a JPEG's EXIF keeps in its IFD0."""

SUB_IFDS = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)
"""Sub-IFDs kept, as a JPEG input's EXIF keeps them (exposure, lens, capture time; GPS position). The Exif one
loses its pointer to an Interop IFD: an offset into the TIFF, wrong in another file, for a rule-set name
("R98") that the ICC profile, kept apart, says better."""


def tiff_exif(img: Image.Image) -> bytes | None:
    """The EXIF block (b"Exif\\0\\0...") of a loaded TIFF's descriptive tags and sub-IFDs; None when it has none."""
    source = img.getexif()  # a TIFF's first IFD, structure tags included
    kept = Image.Exif()
    for tag in DESCRIPTIVE_TAGS:
        if tag in source:
            kept[tag] = source[tag]
    for group in SUB_IFDS:
        entries = source.get_ifd(group) if group in source else {}  # read by Pillow's load()
        entries = {tag: value for tag, value in entries.items() if tag != ExifTags.IFD.Interop}
        if entries:
            kept[group] = entries
    if not len(kept):
        return None
    try:
        return kept.tobytes()
    except (TypeError, ValueError, struct.error):
        # A damaged tag Pillow read but cannot write back (a GPS reference holding numbers: TypeError). The photo
        # is fine; its metadata was not, and an output without it beats refusing the photo.
        return None

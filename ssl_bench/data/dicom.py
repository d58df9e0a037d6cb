"""Read one DICOM image into a float32 array in [0, 1] (pydicom 3), with the metadata we need.

The pixel pipeline follows DICOM PS3.3 C.11 (grayscale transforms), in order:

1. Decode the stored values with pydicom (``Dataset.pixel_array``): native and compressed
   transfer syntaxes (RLE Lossless; JPEG Lossless, JPEG-LS and JPEG 2000 through the pylibjpeg
   plugins). pydicom masks the bits above ``BitsStored`` (and sign-extends signed data), so
   values stored in a 14-bit image are exactly those 14 bits.
2. Modality LUT or rescale (``pydicom.pixels.apply_modality_lut``).
3. VOI: the VOI LUT (``VOILUTSequence``) or the window (``WindowCenter``/``WindowWidth``,
   ``VOILUTFunction``), first value when multi-valued (``pydicom.pixels.apply_voi_lut`` with
   ``index=0``; a LUT wins over a window, as pydicom prefers).
4. Normalisation to [0, 1]:
   - after a window: the window's output range, i.e. ``[y_min, y_max]`` exactly as pydicom
     computes it (``0 .. 2**BitsStored - 1`` for unsigned data, the signed range for signed data,
     the modality LUT's range if there is one, rescaled by slope/intercept if present); values
     below the window map to 0 and above it to 1;
   - after a VOI LUT: the range of the LUT's own entries (min..max of ``LUTData``);
   - with no VOI at all: min-max of the image's own values after the modality LUT (a film scan
     or a processed image without a window uses its full contrast); a constant image becomes 0.
5. ``MONOCHROME1`` (white = low value) is inverted (``1 - x``), so 1 is always bright tissue.

Every failure (not DICOM, truncated, no pixel data, colour or multi-frame image, undecodable
pixel data) raises :class:`ssl_bench.errors.DataError` naming the file and the reason.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

_VIEW_TOKENS = ("MLO", "CC", "ML", "LM", "XCCL", "XCCM", "FB", "SIO", "LMO", "AT")


def is_dicom(path: str | Path) -> bool:
    """``True`` when the file has the DICOM preamble (``DICM`` at byte 128) or a DICOM extension."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom", ".dic"):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_size(path: str | Path) -> tuple[int, int]:
    """``(rows, columns)`` from the header alone (no pixel data is read)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[(0x0028, 0x0010), (0x0028, 0x0011)])
    return int(ds.Rows), int(ds.Columns)


def read_dicom(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``path`` into ``(image, info)``.

    Returns:
        image: float32 ``(rows, columns)`` in [0, 1], bright = dense tissue.
        info: ``laterality`` (``"L"``/``"R"``/``""``), ``view`` (``"CC"``/``"MLO"``/...
        or ``""``), ``orientation`` (the first value of PatientOrientation when it is a valid
        row direction ``"A"``/``"P"``, else ``""``), ``photometric``, ``voi``
        (``"lut"``/``"window"``/``"none"``), ``bits_stored``, ``transfer_syntax``, ``rows``,
        ``columns``, ``modality``, ``patient_id``, ``path``.

    Raises:
        DataError: the file cannot be read or is not a single-frame grayscale image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    where = str(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except InvalidDicomError as exc:
        raise DataError(f"{where}: not a DICOM file ({exc})") from None
    except Exception as exc:  # truncated header, bad element lengths...
        raise DataError(f"{where}: unreadable DICOM ({type(exc).__name__}: {exc})") from None

    truncated = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if truncated:
        raise DataError(f"{where}: truncated file ({truncated[0]})")
    if "PixelData" not in ds:
        kind = getattr(ds, "SOPClassUID", None)
        kind = f" ({kind.name})" if kind is not None and hasattr(kind, "name") else ""
        raise DataError(f"{where}: no pixel data: not an image DICOM{kind}")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise DataError(
            f"{where}: expected a grayscale image (1 sample per pixel), got {samples} "
            f"({ds.get('PhotometricInterpretation', '?')})"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(f"{where}: multi-frame image ({frames} frames) is not supported; expected one 2D image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(f"{where}: unsupported photometric interpretation '{photometric}' for a mammogram")

    _check_native_length(ds, where)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # truncated pixel data, missing decoder plugin, corrupt stream
        syntax = _transfer_syntax_name(ds)
        raise DataError(
            f"{where}: pixel data cannot be decoded ({syntax}): {type(exc).__name__}: {exc}"
        ) from None
    if stored.ndim != 2:
        raise DataError(f"{where}: expected a 2D image, decoded an array of shape {stored.shape}")

    image, voi = _to_unit_range(stored, ds, where)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    info = {
        "path": where,
        "laterality": _laterality(ds),
        "view": _view(ds),
        "orientation": _row_direction(ds),
        "photometric": photometric,
        "voi": voi,
        "bits_stored": int(ds.get("BitsStored", stored.dtype.itemsize * 8)),
        "transfer_syntax": _transfer_syntax_name(ds),
        "rows": int(stored.shape[0]),
        "columns": int(stored.shape[1]),
        "modality": str(ds.get("Modality", "")),
        "patient_id": str(ds.get("PatientID", "")),
    }
    return np.ascontiguousarray(image, dtype=np.float32), info


def _check_native_length(ds, where: str) -> None:
    """Uncompressed pixel data shorter than Rows x Columns x BitsAllocated: a truncated file."""
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None or syntax.is_compressed:
        return
    try:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
        found = len(ds.PixelData)
    except Exception:
        return  # missing attributes: let the decoder report them
    if found < expected:
        raise DataError(f"{where}: truncated file (pixel data has {found} of {expected} bytes)")


def _to_unit_range(stored: np.ndarray, ds, where: str) -> tuple[np.ndarray, str]:
    """Modality LUT, then VOI LUT / window, then linear map to [0, 1] (module docstring)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_modality_lut(stored, ds)
        if _has_voi_lut(ds):
            voi = "lut"
            out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
            lut = np.asarray(_first_voi_lut_data(ds), dtype=np.float64)
            low, high = float(lut.min()), float(lut.max())
        elif _has_window(ds):
            voi = "window"
            out = apply_voi_lut(values, ds, index=0, prefer_lut=False)
            low, high = _window_output_range(ds)
        else:
            voi = "none"
            out = values
            low, high = float(np.min(values)), float(np.max(values))
    except DataError:
        raise
    except Exception as exc:  # malformed LUT descriptor, window width 0...
        raise DataError(f"{where}: invalid grayscale transform (modality/VOI LUT or window): {exc}") from None
    out = np.asarray(out, dtype=np.float32)
    if high <= low:
        return np.zeros_like(out, dtype=np.float32), voi
    image = (out - np.float32(low)) * np.float32(1.0 / (high - low))
    np.clip(image, 0.0, 1.0, out=image)
    return image, voi


def _has_voi_lut(ds) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTData" in seq[0]


def _first_voi_lut_data(ds):
    item = ds.VOILUTSequence[0]
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):  # OW data not converted by pydicom
        bits = int(item.LUTDescriptor[2])
        data = np.frombuffer(data, dtype=np.uint8 if bits <= 8 else np.uint16)
    return data


def _has_window(ds) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _window_output_range(ds) -> tuple[float, float]:
    """The range pydicom's ``apply_windowing`` maps a window onto (PS3.3 C.11.2.1.2)."""
    if ds.get("ModalityLUTSequence"):
        bit_depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        y_min, y_max = 0.0, float(2**bit_depth - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        y_min, y_max = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    return min(y_min, y_max), max(y_min, y_max)


def _transfer_syntax_name(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return getattr(uid, "name", str(uid)) if uid is not None else "unknown transfer syntax"


def _laterality(ds) -> str:
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return ""


def _view(ds) -> str:
    value = str(ds.get("ViewPosition", "") or "").strip().upper()
    if value:
        return value
    # Some converters (e.g. CBIS-DDSM) put the view in PatientOrientation or the patient ID.
    for keyword in ("PatientOrientation", "PatientID"):
        raw = ds.get(keyword)
        if raw is None:
            continue
        text = raw if isinstance(raw, str) else "\\".join(str(v) for v in raw)
        tokens = text.upper().replace("\\", "_").split("_")
        for token in reversed(tokens):
            if token in _VIEW_TOKENS:
                return token
    return ""


def _row_direction(ds) -> str:
    """First value of PatientOrientation (direction of increasing column index): ``A`` or ``P``.

    For a mammogram, ``A`` (toward the nipple) means the chest wall is on the left edge and ``P``
    on the right; anything else (missing, or misused as in CBIS-DDSM's ``'CC'``) gives ``""``.
    """
    raw = ds.get("PatientOrientation")
    if raw is None:
        return ""
    values = list(raw) if not isinstance(raw, str) else raw.split("\\")
    if len(values) != 2:
        return ""
    first = str(values[0]).strip().upper()
    return first if first in ("A", "P") else ""

"""Test helpers: small DICOM files of every kind the reader must handle, made with pydicom.

``make_dicom`` writes one grayscale image (MONOCHROME1/2, any BitsStored, window or VOI LUT,
rescale, laterality/view/orientation) uncompressed or compressed with pydicom's own encoders
(RLE Lossless, JPEG 2000 Lossless). pydicom cannot encode JPEG Lossless (process 14), so
``jpeg_lossless_sv1`` is a minimal encoder (predictor 1, one fixed Huffman table) used only to
produce test input for the pylibjpeg-libjpeg decoder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    DigitalMammographyXRayImageStorageForPresentation as MG,
    generate_uid,
)


def make_dicom(path, pixels, *, photometric="MONOCHROME2", bits_stored=16, signed=False,
               window=None, voi_lut=None, rescale=None, laterality=None, image_laterality=None,
               view=None, orientation=None, compress=None) -> Path:
    """Write ``pixels`` (integers) as a DICOM MG image; return the path.

    window: ``(center, width)`` or ``([c1, c2], [w1, w2])``; voi_lut: ``(first_mapped, bits,
    data[, "US"|"OW"])``; rescale: ``(slope, intercept)``; compress: None, ``"rle"``, ``"j2k"`` or ``"jpegll"``.
    """
    path = Path(path)
    arr = np.asarray(pixels).astype(np.int16 if signed else np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = MG
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "TEST"
    if laterality:
        ds.Laterality = laterality
    if image_laterality:
        ds.ImageLaterality = image_laterality
    if view:
        ds.ViewPosition = view
    if orientation:
        ds.PatientOrientation = list(orientation)
    if compress == "jpegll":
        _set_jpeg_lossless(ds, arr, photometric, bits_stored)
    else:
        ds.set_pixel_data(arr, photometric, bits_stored)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        first, bits, data, vr = (*voi_lut, "US") if len(voi_lut) == 3 else voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(data), first, bits]
        if vr == "OW":
            item.add_new(0x00283006, "OW", np.asarray(data, dtype="<u2").tobytes())
        else:
            item.add_new(0x00283006, "US", [int(v) for v in data])
        ds.VOILUTSequence = [item]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if compress == "rle":
        ds.compress(RLELossless)
    elif compress == "j2k":
        ds.compress(JPEG2000Lossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def non_image_dicom(path) -> Path:
    """A valid DICOM without pixel data (a structured-report-like object)."""
    path = Path(path)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)
    return path


def truncate(path, keep: float = 0.6) -> Path:
    """Cut a file to ``keep`` of its size (a download that stopped half-way)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# ----------------------------------------------------------------- JPEG Lossless (process 14)


def _set_jpeg_lossless(ds, arr, photometric, bits_stored):
    rows, cols = arr.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([jpeg_lossless_sv1(arr.astype(np.uint16), bits_stored)])
    ds["PixelData"].VR = "OB"


def jpeg_lossless_sv1(arr: np.ndarray, precision: int = 16) -> bytes:
    """Encode a 2D uint16 array as a JPEG Lossless, first-order prediction (SV1) codestream."""
    rows, cols = arr.shape
    x = arr.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)

    bits: list[str] = []
    for d in diff.ravel().tolist():
        size = 0 if d == 0 else int(abs(d)).bit_length()
        bits.append(format(size, "05b"))  # 17 symbols, all 5-bit codes: code == category
        if 0 < size < 16:
            value = d if d > 0 else d + (1 << size) - 1
            bits.append(format(value, f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1, Td/Ta=0, Ss=predictor 1, Se=0, Ah/Al=0
    return (b"\xff\xd8" + segment(0xC3, sof) + segment(0xC4, dht) + segment(0xDA, sos)
            + bytes(data) + b"\xff\xd9")

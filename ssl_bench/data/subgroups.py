"""Subgroup variables of a sample table: what a report splits its AUCs by, and the one spelling of
breast density that every loader writes.

Mammography reviewers ask whether a classifier works equally in every subgroup the data carries:
view (CC / MLO), laterality, breast density (ACR BI-RADS categories, 5th edition letters: A almost
entirely fatty, B scattered fibroglandular, C heterogeneously dense, D extremely dense), lesion
type (CBIS-DDSM's mass and calcification sheets; the phantom's findings) and manufacturer. View and
laterality are columns of every sample table (:data:`~ssl_bench.data.base.SAMPLE_COLUMNS`); the
others are optional columns a dataset writes where its source records them: INbreast's ``ACR``,
CBIS-DDSM's ``breast_density`` (``breast density`` in its calcification sheets) and sheet kind,
VinDr-Mammo's ``breast_density`` (``DENSITY A`` .. ``DENSITY D``), a manifest's own columns of
these names, and the phantom's density and finding. An empty value means unknown.
"""
from __future__ import annotations

import re

DENSITY = "density"
LESION_TYPE = "lesion_type"
MANUFACTURER = "manufacturer"
#: optional sample-table columns: kept by the loaders (data/base.py) and written to subgroups.csv
OPTIONAL_SUBGROUP_COLUMNS = (DENSITY, LESION_TYPE, MANUFACTURER)
#: every subgroup variable, in report order (view and laterality are in every sample table)
SUBGROUP_COLUMNS = ("view", "laterality", *OPTIONAL_SUBGROUP_COLUMNS)
ACR_LETTERS = ("A", "B", "C", "D")

_ACR = re.compile(r"^(?:(?:acr|density|breast density)[\s_:-]*)?([1-4a-d])$", re.IGNORECASE)


def acr_density(value: object) -> str:
    """A breast-density value as its ACR letter, or ``""`` when it is blank or not a density.

    Args:
        value: ``1``..``4`` (INbreast's ``ACR``, CBIS-DDSM's ``breast_density``, as numbers or
            text), ``"A"``..``"D"``, or ``"DENSITY A"`` (VinDr-Mammo), in any case.

    Returns:
        ``"A"``, ``"B"``, ``"C"``, ``"D"`` or ``""``.
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value).strip()
    if re.fullmatch(r"[1-4]\.0+", text):  # a numeric sheet column read as floats
        text = text[0]
    m = _ACR.match(text)
    if m is None:
        return ""
    code = m.group(1).upper()
    return ACR_LETTERS[int(code) - 1] if code.isdigit() else code

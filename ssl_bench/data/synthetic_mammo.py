"""Built-in synthetic mammography: a cohort of breast images with benign and malignant findings.

Lets every command run on a fresh machine with no download, and gives tests a dataset whose
ground truth is known. The cohort mirrors INbreast by default: 387 images (287 benign, 100
malignant) of 115 patients with 2-4 views each (CC and/or MLO, left and/or right breast). The
label belongs to a breast: a lesion is drawn in both views of its breast, at the same depth from
the nipple (the other coordinate, medio-lateral in CC and supero-inferior in MLO, is independent,
as in real projections).

How an image is made (pure numpy/scipy, geometry in normalised coordinates so that any
resolution is rendered directly, not downscaled):

- Silhouette: a super-ellipse against the chest wall with low-order shape harmonics and a small
  nipple bump; size and shape vary per patient. MLO views are taller, run into the axilla at the
  top of the image and carry a pectoral-muscle triangle in the upper corner at the chest wall.
- Thickness: the compressed breast thins toward the skin, so tissue darkens near the border; a
  thin bright skin line follows the outline. The background is near 0 with slight noise.
- Fibroglandular tissue: power-law noise with spectrum 1/f^beta, beta = 3, the exponent measured
  for mammographic anatomical background by Burgess, Jacobson & Judy, "Human observer detection
  experiments with mammograms and power-law noise", Med. Phys. 28(4), 2001 ("beta about 3").
  Part of the noise is sampled in polar coordinates around the nipple and stretched radially, so
  that structures run toward the nipple like ducts. The field is thresholded softly into dense
  tissue whose amount follows the patient's density (fatty to dense) and whose envelope fades
  toward the skin and the retro-mammary fat at the chest wall.
- Normal linear structures in every breast (Cooper's ligaments, vessels, ducts): 14-25 thin
  tapered lines per view, most running toward the nipple, some any way; they make the edges and
  ridges of every breast, benign or malignant.
- Findings (dealt per breast, so that each class has its table's mix exactly), built from three
  primitives whose size and brightness are drawn from one distribution whatever the class: a mass
  core (a projected ellipsoid, its margin blurred from sharp to ill-defined or obscured), lines
  (the same as the normal ones) and calcification specks. The class is in how they are shaped and
  arranged in the breast, as BI-RADS reads them (ACR BI-RADS Atlas, 5th ed., 2013: mass shape and
  margin; calcification distribution):
  benign: ``none`` (no finding), ``round_mass``, ``oval_mass`` (circumscribed),
  ``lobulated_mass`` (gently lobulated), ``vascular_calcs`` (rod-like calcifications cast in a
  vessel and its branches, running *across* the ducts), ``oval_mass+calcs`` (a fibroadenoma beside
  a calcified vessel), ``radial_scar`` (lines converging on a lucent centre, no dense core);
  malignant: ``segmental_calcs`` (the same cast, running *along* the ducts toward the nipple:
  BI-RADS' segmental, fine-linear branching distribution), ``spiculated_mass`` (an angular core
  whose spicules, lines of the same kind as the normal ones, converge on its centre; they replace
  as many normal lines, so a breast's line count does not depend on its class),
  ``irregular_mass`` (angular margin, no spicules) or ``spiculated_mass+calcs``.
  Among the breasts with a finding, about as many of each class have a mass core (0.40 benign,
  0.40 malignant) and calcifications (0.80, 0.80). 12% of benign breasts have no finding (INbreast
  has 23% BI-RADS 1 among its benign images; fewer here, so that detecting *a* finding is worth
  at most an AUC of 0.56).
  Sizes are real ones (masses 1.75-3.5 cm, lines 0.5-1 mm sigma and 1-2.5 cm long, casts 1.75-3
  cm); a pixel is 0.33 mm at 768x384 and 2 mm at 128x64, where a fine speck (under 0.5 mm) would
  vanish, so specks are 0.5-0.9 mm sigma, the coarse end of real calcifications, and their casts
  a dotted streak at the quick size. Contrasts are what a dense mass, a vessel and calcium add above
  the tissue around them (fat to the densest fibroglandular tissue is 0.1-0.2; a mass adds
  0.35-0.55, a line 0.15-0.3, a speck 0.6-1), times the ``difficulty`` factor
  (:data:`DIFFICULTY`). The parts of a breast merge by their maximum, never by their sum: no
  arrangement makes a brighter or larger spot.
- What reads the class, and what does not: the position-free families of
  :mod:`ssl_bench.models.position_free` (intensity histograms, counts of bright components,
  gradient statistics, local maxima, profiles, a thumbnail), read by gradient-boosted trees with
  patient-grouped folds, give pooled AUCs of at most 0.60 at 128x64 and 0.61 at 768x384 (their
  union 0.57 at both; ``tests/test_synthetic_mammo.py`` holds them to <= 0.65); the morphology of
  the lesion (its margin, the lines converging on it, the direction of a cast relative to the
  nipple) reads it (a positive control in the same tests). Supervised, the quick profile's
  ResNet-10t from a random initialisation (``--pretext none --transfer finetune``, 5 folds,
  seed 0, pooled out-of-fold AUC, 2-core CPU): ``easy`` 0.867, ``standard`` 0.821 (0.643 with
  10% of the labels, ``--label-fraction 0.1``), ``hard`` 0.666. At the quick size it reads
  mostly the calcification casts; a spiculated margin is a few pixels there, which leaves
  headroom for methods that learn more from the same images.
  Lesions are rendered at least ``SUPERSAMPLE`` pixels high and area-averaged (details below a
  pixel are further widened to half a pixel with their integrated intensity kept), so they fade
  as they would on a detector with large pixels.

Subgroups (what ``ssl-bench report`` splits AUCs by): the sample table records each image's
``finding``, its ``lesion_type`` (``mass``, ``calcification``, ``mass+calcification``,
``distortion``, ``none``) and the patient's ACR ``density`` category, A-D by the density trait its
tissue is drawn with (below 0.25, 0.5, 0.75, above).

Orientation: ``"canonical"`` puts every chest wall on the LEFT edge (nipple pointing right).
``"laterality"`` stores images as the real CBIS-DDSM files are stored: left (L) breasts have the
chest wall on the left edge, right (R) breasts on the RIGHT edge, so mirroring the R images (as
:func:`ssl_bench.data.preprocess.flip_to_canonical` does) brings the set back to canonical.

Determinism: the cohort plan, every patient, breast and image draw from their own
``numpy.random.SeedSequence(seed, spawn_key=(part, patient, laterality, view))``, so the output is
bit-identical for a seed and no image depends on the order (or process) it is generated in.
"""
from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import fft as sp_fft
from scipy import ndimage, special

from ..fileio import atomic_write, atomic_write_text

# (3 and 4 were drafts of this generator whose images may sit in caches: skipped, never reused)
VERSION = 6  # bump whenever generate() output changes for a given seed; for cache keys
# Shares of the findings per breast. Among breasts with a finding, a mass core is in as many benign
# as malignant breasts (0.40), so are calcifications (0.80); "none" is about half INbreast's
# BI-RADS 1 share (67 of its 287 benign images), so that detecting a finding is worth little.
BENIGN_FINDINGS = {"none": 0.12, "round_mass": 0.06, "oval_mass": 0.05, "lobulated_mass": 0.04,
                   "oval_mass+calcs": 0.20, "vascular_calcs": 0.50, "radial_scar": 0.03}
MALIGNANT_FINDINGS = {"spiculated_mass": 0.15, "irregular_mass": 0.05, "segmental_calcs": 0.60,
                      "spiculated_mass+calcs": 0.20}
#: the mass core's outline, per finding that has one
MASS_FINDINGS = {"round_mass": "round", "oval_mass": "oval", "lobulated_mass": "lobulated",
                 "oval_mass+calcs": "oval", "irregular_mass": "irregular", "spiculated_mass": "irregular",
                 "spiculated_mass+calcs": "irregular"}
#: where converging lines start, in lesion radii from their centre: within a carcinoma's core, or
#: around the lucent centre of a radial scar
CONVERGING_FINDINGS = {"spiculated_mass": 0.9, "spiculated_mass+calcs": 0.9, "radial_scar": 0.5}
#: calcifications: the same branching cast, along the ducts toward the nipple (segmental,
#: malignant) or across them, along a vessel (vascular, benign); the angle from the nipple
#: direction is drawn around this
CALC_FINDINGS = {"segmental_calcs": 0.0, "spiculated_mass+calcs": 0.0, "vascular_calcs": np.pi / 2,
                 "oval_mass+calcs": np.pi / 2}
ORIENTATIONS = ("canonical", "laterality")
TABLE_COLUMNS = ("image_id", "patient_id", "label", "laterality", "view", "finding", "density", "lesion_type")
#: upper bounds of the patient's density trait (0 fatty .. 1 dense) of ACR categories A, B, C (D above)
ACR_BOUNDS = (0.25, 0.5, 0.75)
#: the finding's lesion type, as reviewers group findings (a radial scar is an architectural distortion)
LESION_TYPES = {"none": "none", "radial_scar": "distortion", "segmental_calcs": "calcification",
                "vascular_calcs": "calcification", "oval_mass+calcs": "mass+calcification",
                "spiculated_mass+calcs": "mass+calcification",
                **{f: "mass" for f in MASS_FINDINGS if "+" not in f}}
MIN_SIZE = 16
BETA = 3.0  # power-law exponent of the anatomical background (Burgess et al. 2001)
SINGLE_VIEW_SHARE = 0.1  # target share of patients with one breast seen in a single view
# Sizes in image heights (about 25 cm: 0.04 is 1 cm), ranges drawn uniformly; contrasts are what a
# structure adds above the tissue around it (fat to the densest tissue is 0.25-0.35), before the
# difficulty's factor. One distribution per primitive, whatever the class.
MASS_RADIUS = (0.035, 0.07)  # a 1.75-3.5 cm mass
MASS_CONTRAST = (0.35, 0.55)  # about as dense as fibroglandular tissue, a little denser
MASS_MARGIN = (0.03, 0.25)  # Gaussian blur of the margin, in radii: sharp to ill-defined or obscured
OUTLINES = {"round": (0.02, range(2, 5)), "lobulated": (0.1, range(2, 5)),
            "irregular": (0.06, range(3, 13))}  # harmonic std, orders: smooth lobes or an angular margin
BREAST_LINES = (14, 26)  # linear structures per view (ligaments, vessels, ducts, spicules)
LINE_LENGTH = (0.04, 0.1)
LINE_WIDTH = (0.002, 0.004)  # Gaussian sigma: 0.5-1 mm
LINE_CONTRAST = (0.15, 0.3)  # at the base, tapering toward the tip
CONVERGING_LINES = (8, 15)
CALC_COUNT = (40, 70)
CALC_RADIUS = (0.002, 0.0035)  # Gaussian sigma of a round speck: 0.5-0.9 mm
CALC_CONTRAST = (0.6, 1.0)  # calcium: well above the tissue around it
CALC_EXTENT = (0.07, 0.12)  # length of the cast's main branch (1.75-3 cm)
CALC_AXIS_SPREAD = 0.15  # std (radians) of the cast's direction around its finding's angle
CALC_BRANCHES = (1, 4)  # side branches off the main one
CALC_JITTER = 0.0015  # scatter of specks across their branch
CALC_ELONGATION = (1.5, 4.0)  # speck length / width: rod-like, along its branch
#: lesion contrast factor per ``difficulty`` (a number is taken as the factor itself); the quick
#: profile's supervised ResNet-10t reaches a pooled AUC of 0.867, 0.821 and 0.666 (see above)
DIFFICULTY = {"easy": 1.5, "standard": 1.0, "hard": 0.6}
SUPERSAMPLE = 384  # lesions are rendered at least this many pixels high, then area-averaged


@dataclass(frozen=True)
class Breast:
    """One imaged breast of the cohort: its views, its label and the finding drawn in them."""

    patient: int
    laterality: str
    views: tuple[str, ...]
    label: int
    finding: str


# ----------------------------------------------------------------------------- cohort plan


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Generator for one part of the cohort, keyed so that no part depends on another's draws."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _spread_views(n_patients: int, n_images: int, n_malignant: int) -> tuple[int, int]:
    """Number of 3-image patients and of malignant single-view breasts that hit the counts.

    A patient has one breast in both views (2 images), both breasts in both views (4) or one in
    both and one in a single view (3). With ``n3`` such patients there are ``n3`` single-view
    breasts; ``a`` of them are malignant and the other malignant images come in pairs.
    """
    extra = n_images - 2 * n_patients
    n_benign = n_images - n_malignant
    target = round(SINGLE_VIEW_SHARE * n_patients)
    candidates = range(extra % 2, min(extra, 2 * n_patients - extra) + 1, 2)
    for n3 in sorted(candidates, key=lambda n: abs(n - target)):
        low, high = max(0, n3 - n_benign), min(n3, n_malignant)
        low += (low - n_malignant) % 2  # a has the parity of n_malignant
        high -= (high - n_malignant) % 2
        if low <= high:
            share = round(n3 * n_malignant / n_images)
            a = int(np.clip(share - (share - n_malignant) % 2, low, high))
            return n3, a
    raise ValueError(
        f"cannot give {n_patients} patients {n_images} images with {n_malignant} malignant: "
        f"{n_images} images of {n_patients} patients means every breast is seen in both views, "
        "so each class needs an even number of images; change n_benign or n_malignant by one"
    )


def _validate(image_size, n_patients, n_benign, n_malignant, seed, orientation, difficulty) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"image_size must be at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(difficulty, str) and difficulty not in DIFFICULTY:
        raise ValueError(f"difficulty must be one of {tuple(DIFFICULTY)} or a positive number, got {difficulty!r}")
    if not isinstance(difficulty, str) and not (isinstance(difficulty, (int, float)) and 0 < difficulty <= 5):
        raise ValueError(f"difficulty must be one of {tuple(DIFFICULTY)} or a number in (0, 5], got {difficulty!r}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if n_malignant < 1 or n_benign < 1:
        raise ValueError(
            f"need at least one benign and one malignant image, got n_benign={n_benign}, "
            f"n_malignant={n_malignant}"
        )
    n_images = n_benign + n_malignant
    if not 2 * n_patients <= n_images <= 4 * n_patients:
        raise ValueError(
            f"every patient has 2-4 images, so {n_patients} patients need between "
            f"{2 * n_patients} and {4 * n_patients} images; got {n_images} "
            f"(n_benign={n_benign} + n_malignant={n_malignant})"
        )
    return height, width


def plan_cohort(n_patients: int, n_benign: int, n_malignant: int, seed: int) -> list[Breast]:
    """Patients, breasts, views, labels and findings; exact image counts per class."""
    n_images = n_benign + n_malignant
    rng = _rng(seed, 0)
    n3, single_malignant = _spread_views(n_patients, n_images, n_malignant)
    n4 = (n_images - 2 * n_patients - n3) // 2
    images_per_patient = rng.permutation([4] * n4 + [3] * n3 + [2] * (n_patients - n3 - n4))

    doubles: list[tuple[int, str, tuple[str, ...]]] = []
    singles: list[tuple[int, str, tuple[str, ...]]] = []
    for patient, count in enumerate(images_per_patient):
        first, second = ("L", "R") if rng.random() < 0.5 else ("R", "L")
        doubles.append((patient, first, ("CC", "MLO")))
        if count == 4:
            doubles.append((patient, second, ("CC", "MLO")))
        elif count == 3:
            singles.append((patient, second, ("CC",) if rng.random() < 0.5 else ("MLO",)))

    malignant = set(rng.choice(len(singles), single_malignant, replace=False).tolist())
    chosen_singles = [b for i, b in enumerate(singles) if i in malignant]
    n_pairs = (n_malignant - single_malignant) // 2
    malignant = set(rng.choice(len(doubles), n_pairs, replace=False).tolist())
    chosen_doubles = [b for i, b in enumerate(doubles) if i in malignant]
    malignant_keys = {(p, side) for p, side, _ in chosen_singles + chosen_doubles}

    planned = sorted(doubles + singles)
    labels = [int((patient, side) in malignant_keys) for patient, side, _ in planned]
    decks = {label: iter(_deal_findings(MALIGNANT_FINDINGS if label else BENIGN_FINDINGS,
                                        labels.count(label), rng)) for label in (0, 1)}
    return [Breast(patient, side, views, label, next(decks[label]))
            for (patient, side, views), label in zip(planned, labels)]


def _deal_findings(shares: dict[str, float], n: int, rng) -> list[str]:
    """``n`` findings in the given shares (largest remainder), shuffled: every cohort has the
    table's mix, so no class owes a brighter or larger average finding to the luck of the draw."""
    expected = np.array(list(shares.values())) * n
    counts = np.floor(expected).astype(int)
    counts[np.argsort(counts - expected)[: n - counts.sum()]] += 1
    return [str(f) for f in rng.permutation(np.repeat(list(shares), counts))]


# ----------------------------------------------------------------------------- anatomy


@functools.lru_cache(maxsize=8)
def _power_law_amplitude(shape: tuple[int, int], beta: float, f0: float) -> np.ndarray:
    """Spectral amplitude (f^2 + f0^2)^(-beta/4), f in cycles per image height, no DC term."""
    height, width = shape
    fy = sp_fft.fftfreq(height)[:, None] * height
    fx = sp_fft.fftfreq(width)[None, :] * height
    amplitude = (fy**2 + fx**2 + f0**2) ** (-beta / 4)
    amplitude[0, 0] = 0.0
    return amplitude.astype(np.float32)


def _power_law_pair(rng, shape: tuple[int, int], beta: float = BETA, f0: float = 1.5):
    """Two independent periodic random fields with power spectrum ~ 1/f^beta, unit std each.

    Random-phase spectral synthesis: the real and imaginary parts of one complex inverse FFT are
    uncorrelated fields. Frequencies are in cycles per image height, so the texture looks the same
    at any resolution.
    """
    phase = rng.random(shape, dtype=np.float32) * np.float32(2 * np.pi)
    spectrum = _power_law_amplitude(shape, beta, f0) * (np.cos(phase) + 1j * np.sin(phase))
    field = sp_fft.ifft2(spectrum.astype(np.complex64), norm="forward")
    return field.real / field.real.std(), field.imag / field.imag.std()


def _smoothstep(x, edge0: float, edge1: float):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def density_category(seed: int, patient: int) -> str:
    """The ACR density letter of a patient's density trait (the value its images are drawn with).

    Args:
        seed: the cohort's seed.
        patient: the patient's index.

    Returns:
        ``"A"`` (trait below 0.25), ``"B"``, ``"C"`` or ``"D"`` (0.75 and above).
    """
    density = _patient_traits(_rng(seed, 1, patient))["density"]
    return "ABCD"[int(np.searchsorted(ACR_BOUNDS, density, side="right"))]


def _patient_traits(rng) -> dict:
    return {
        "density": rng.beta(2.0, 2.2),  # 0 fatty .. 1 extremely dense
        "reach": rng.uniform(0.62, 0.9),  # nipple distance from chest wall, fraction of width
        "half_height": rng.uniform(0.28, 0.4),  # CC half-height, in image heights
        "squareness": rng.uniform(1.7, 2.2),  # super-ellipse exponent
        "fat": rng.uniform(0.22, 0.32),  # well above the background: Otsu finds the whole breast
        "gland": rng.uniform(0.1, 0.2),
    }


def _view_geometry(traits: dict, view: str, aspect: float, rng) -> dict:
    """Silhouette parameters of one view, lengths in image heights (x from the chest wall)."""
    reach = traits["reach"] * rng.uniform(0.95, 1.05)
    b = traits["half_height"] * rng.uniform(0.95, 1.05)
    geometry = {
        "harmonics": [(rng.normal(0, 0.015), rng.uniform(0, 2 * np.pi)) for _ in range(2, 5)],
        "nipple": (rng.uniform(0.02, 0.04), rng.normal(0, 0.08)),
        "squareness": traits["squareness"],
    }
    if view == "CC":
        cy = 0.5 + rng.normal(0, 0.03)
        b = min(b, cy - 0.04, 0.96 - cy)
        geometry.update(cy=cy, a=reach * aspect * 0.92, b_up=b, b_down=b, pectoral=None)
    else:
        cy = rng.uniform(0.48, 0.58)
        b_up = cy * rng.uniform(1.08, 1.2)  # runs off the top edge into the axilla
        b_down = (1 - cy) * rng.uniform(0.85, 1.1)  # may run off the bottom edge
        a = min(reach * 1.05, 0.95) * aspect * 0.95
        x_top = a * (1 - (cy / b_up) ** geometry["squareness"]) ** (1 / geometry["squareness"])
        pectoral = {
            "width": x_top * rng.uniform(0.65, 0.95),
            "height": rng.uniform(0.3, 0.55),
            "curve": rng.uniform(0.75, 1.1),
            "level": rng.uniform(0.55, 0.7),
        }
        geometry.update(cy=cy, a=a, b_up=b_up, b_down=b_down, pectoral=pectoral)
    return geometry


def _half_extent(geometry: dict, x: float, upward: bool) -> float:
    """Distance from the nipple axis to the outline at depth x (ignoring shape harmonics)."""
    p = geometry["squareness"]
    b = geometry["b_up"] if upward else geometry["b_down"]
    return b * max(0.0, 1 - (x / geometry["a"]) ** p) ** (1 / p)


def _pectoral_edge(pectoral: dict, y) -> np.ndarray:
    """x of the pectoral muscle border at height y (0 below the muscle)."""
    t = np.clip(1 - np.asarray(y) / pectoral["height"], 0, None)
    return pectoral["width"] * t ** pectoral["curve"]


# ----------------------------------------------------------------------------- structures
#
# Every breast carries normal linear structures (Cooper's ligaments, vessels, ducts seen edge-on):
# thin tapered lines drawn from one distribution (LINE_*). A finding is built from three
# primitives shared by both classes, each drawn from one distribution whatever the class: a mass
# core (MASS_*), lines (the same LINE_* as the normal ones) and calcification specks (CALC_*).
# The class changes only how they are shaped and arranged. Parts of one breast merge by their
# maximum (a spicule runs out of its core, a speck in a mass does not add up to a brighter one),
# so no arrangement makes a brighter or larger spot than another.


def _plan_lesion(finding: str, rng) -> dict:
    """Lesion parameters shared by both views of a breast (sizes in image heights)."""
    lesion = {
        "depth": rng.uniform(0.2, 0.75),  # from the nipple toward the chest wall, fraction of reach
        "offset": {"CC": rng.uniform(-0.6, 0.6), "MLO": rng.uniform(-0.3, 0.6)},
        "seed": int(rng.integers(2**31)),
    }
    if finding in MASS_FINDINGS or finding in CONVERGING_FINDINGS:
        lesion["radius"] = rng.uniform(*MASS_RADIUS)
        lesion["contrast"] = rng.uniform(*MASS_CONTRAST)
    return lesion


def _stamp(canvas: np.ndarray, center_px, reach_px, box=None):
    """Slices of ``canvas`` around a centre and the pixel offsets (dy, dx) from that centre.

    The window is ``reach_px`` either side of the centre, or ``box = (y_lo, y_hi, x_lo, x_hi)``
    (offsets from the centre, in pixels) when given.
    """
    height, width = canvas.shape
    cy, cx = center_px
    y_lo, y_hi, x_lo, x_hi = box if box is not None else (-reach_px, reach_px, -reach_px, reach_px)
    y0, x0 = min(max(int(cy + y_lo), 0), height), min(max(int(cx + x_lo), 0), width)
    y1, x1 = max(min(int(cy + y_hi) + 2, height), y0), max(min(int(cx + x_hi) + 2, width), x0)  # empty off the canvas
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    return (slice(y0, y1), slice(x0, x1)), dy, dx


def _paint(canvas: np.ndarray, window, value: np.ndarray) -> None:
    """Merge ``value`` into ``canvas[window]`` by the maximum."""
    np.maximum(canvas[window], value, out=canvas[window])


def _outline(dy, dx, amplitude: float, harmonics: range, rng):
    """Radial outline factor (1 = circle) with random shape harmonics ``harmonics`` of std
    ``amplitude``: low orders give smooth lobes, high orders an angular, irregular margin."""
    theta = np.arctan2(dy, dx)
    return 1 + sum(
        rng.normal(0, amplitude) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in harmonics
    )


def _draw_core(canvas, center_px, lesion: dict, shape: str, scale: float, contrast: float, rng) -> None:
    """A mass: projected thickness of an ellipsoid whose outline is ``shape`` (``"round"``,
    ``"oval"``, ``"lobulated"`` or ``"irregular"``), its margin blurred by a Gaussian of
    ``MASS_MARGIN`` radii (sharp to ill-defined or obscured, the same range in both classes)."""
    radius = lesion["radius"] * scale
    margin = rng.uniform(*MASS_MARGIN) * radius
    window, dy, dx = _stamp(canvas, center_px, radius * 1.6 + 3 * margin)
    if shape == "oval":
        ratio, tilt = rng.uniform(0.55, 0.8), rng.uniform(0, np.pi)
        u = dx * np.cos(tilt) + dy * np.sin(tilt)
        v = -dx * np.sin(tilt) + dy * np.cos(tilt)
        q = np.hypot(u * np.sqrt(ratio), v / np.sqrt(ratio)) / radius  # same area as the circle
    else:
        amplitude, harmonics = OUTLINES[shape]
        q = np.hypot(dy, dx) / (radius * _outline(dy, dx, amplitude, harmonics, rng))
    core = lesion["contrast"] * contrast * np.sqrt(np.clip(1 - q * q, 0, 1))
    _paint(canvas, window, ndimage.gaussian_filter(core, margin, mode="constant"))


def _draw_line(canvas, start_px, angle: float, length: float, width: float, strength: float,
               bend: float) -> None:
    """A thin line from ``start_px`` (pixels) along ``angle`` (radians), ``length`` and Gaussian
    ``width`` in pixels, gently curved by ``bend``; it tapers in height and width toward its tip
    (a spicule, a ligament, a vessel). Below a pixel it is widened, its integrated intensity kept."""
    sigma = max(width, 0.5)
    c, s = np.cos(angle), np.sin(angle)
    sag = abs(bend) * length**2 + 3 * sigma
    ys, xs = [0.0, length * s], [0.0, length * c]
    box = (min(ys) - sag, max(ys) + sag, min(xs) - sag, max(xs) + sag)
    window, dy, dx = _stamp(canvas, start_px, 0, box)
    along = dx * c + dy * s
    across = -dx * s + dy * c - bend * np.clip(along, 0, None) ** 2
    t = along / length
    taper = np.where((t >= 0) & (t <= 1), _smoothstep(t, 0, 0.1) * (1 - 0.7 * np.clip(t, 0, 1)), 0)
    thin = sigma * (1 - 0.5 * np.clip(t, 0, 1))
    _paint(canvas, window, strength * width / sigma * taper * np.exp(-0.5 * (across / thin) ** 2))


def _line_draws(rng, n: int, scale: float, contrast: float):
    """``n`` lines' (length, width, strength, bend), pixels: one distribution for every line."""
    length = rng.uniform(*LINE_LENGTH, size=n) * scale
    return zip(length, rng.uniform(*LINE_WIDTH, size=n) * scale,
               rng.uniform(*LINE_CONTRAST, size=n) * contrast, rng.normal(0, 0.15, size=n) / length)


def _draw_converging(canvas, center_px, lesion: dict, start: float, scale, contrast, rng) -> int:
    """Lines that radiate from one centre, starting ``start`` radii out: the spicules of a
    carcinoma (from within its core) or the long arms of a radial scar (around a lucent centre).
    Returns how many (they replace as many normal lines: the breast's line count is unchanged)."""
    n = int(rng.integers(*CONVERGING_LINES))
    angles = rng.uniform(0, 2 * np.pi, size=n)
    radius = lesion["radius"] * scale
    for angle, (length, width, strength, bend) in zip(angles, _line_draws(rng, n, scale, contrast)):
        begin = (center_px[0] + start * radius * np.sin(angle), center_px[1] + start * radius * np.cos(angle))
        _draw_line(canvas, begin, angle, length + (1 - start) * radius, width, strength, bend)
    return n


def _draw_specks(canvas, center_px, offsets, elongations, angles, scale, contrast, rng) -> None:
    """Calcification specks (anisotropic Gaussian blobs) at ``offsets`` (image heights from the
    centre), every one's size and brightness drawn from ``CALC_RADIUS`` and ``CALC_CONTRAST``
    (an elongated speck keeps the area of a round one); integrated intensity kept below a pixel."""
    n = len(offsets)
    radii = rng.uniform(*CALC_RADIUS, size=n) * scale
    contrasts = rng.uniform(*CALC_CONTRAST, size=n) * contrast
    for (oy, ox), r, e, angle, c in zip(offsets, radii, elongations, angles, contrasts):
        sigma_major, sigma_minor = r * np.sqrt(e), r / np.sqrt(e)
        s1, s2 = max(sigma_major, 0.5), max(sigma_minor, 0.5)
        amplitude = c * sigma_major * sigma_minor / (s1 * s2)
        window, dy, dx = _stamp(canvas, (center_px[0] + oy * scale, center_px[1] + ox * scale), 3 * s1)
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / s1
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / s2
        _paint(canvas, window, amplitude * np.exp(-0.5 * (u * u + v * v)))


def _calc_cast(n: int, axis: float, extent: float, rng):
    """Offsets (image heights, from the lesion centre), elongations and orientations of ``n``
    rod-like calcifications cast in a branching tubular structure whose main branch runs along
    ``axis`` (radians) for ``extent``, with 1-3 side branches forking off it. Along the ducts toward
    the nipple it is BI-RADS' segmental, fine-linear branching distribution (suspicious); across
    them it is a calcified vessel and its branches (vascular, benign). The same draw either way, so
    no summary that ignores direction can tell them apart."""
    n_branches = int(rng.integers(*CALC_BRANCHES))
    fork = rng.uniform(0.1, 0.6, size=n_branches) * extent  # where each side branch leaves the main one
    turn = rng.choice([-1, 1], size=n_branches) * rng.uniform(0.3, 0.7, size=n_branches)
    branch = rng.integers(0, n_branches + 1, size=n)  # 0: the main branch
    side = np.maximum(branch - 1, 0)
    base = np.where(branch > 0, fork[side], rng.uniform(0, extent, size=n))
    direction = axis + np.where(branch > 0, turn[side], 0.0)
    reach = np.where(branch > 0, rng.uniform(0, 0.5 * extent, size=n), 0.0)
    y = base * np.sin(axis) + reach * np.sin(direction)
    x = base * np.cos(axis) + reach * np.cos(direction)
    offsets = np.stack([y, x], axis=1) + rng.normal(0, CALC_JITTER, size=(n, 2))
    offsets -= 0.5 * extent * np.array([np.sin(axis), np.cos(axis)])  # centred on the lesion
    return offsets, rng.uniform(*CALC_ELONGATION, size=n), direction + rng.normal(0, 0.2, size=n)


def _breast_point(geometry: dict, depth: float, offset: float, view: str) -> tuple[float, float]:
    """A point (y, x) in image heights inside the breast: ``depth`` from the nipple toward the
    chest wall (fraction of the reach), ``offset`` across (fraction of the half-height), kept
    below the pectoral muscle in an MLO view."""
    x = geometry["a"] * (1 - depth)
    y = geometry["cy"] + 0.7 * offset * _half_extent(geometry, x, upward=offset < 0)
    pectoral = geometry["pectoral"]
    if pectoral is not None:  # keep it out of the muscle: below the border at this depth
        below_muscle = pectoral["height"] * (1 - min(x / pectoral["width"], 1) ** (1 / pectoral["curve"]))
        y = max(y, below_muscle + 0.04)
    return float(np.clip(y, 0.05, 0.95)), float(x)


def _nipple_direction(geometry: dict, y: float, x: float) -> float:
    """Direction (radians, image axes) from the point (y, x) to the nipple: where the ducts run."""
    return float(np.arctan2(geometry["cy"] - y, geometry["a"] - x))


def _lesion_center(geometry: dict, lesion: dict, view: str) -> tuple[float, float]:
    """Lesion centre (y, x) in image heights: same depth in both views, view-specific offset."""
    return _breast_point(geometry, lesion["depth"], lesion["offset"][view], view)


def _draw_structures(shape: tuple[int, int], geometry: dict, finding: str, lesion: dict, view: str,
                     scale: float, difficulty: float, rng) -> np.ndarray:
    """What the breast's normal linear structures and its finding add to the tissue, on a
    ``shape`` canvas. Drawn ``SUPERSAMPLE`` times finer than needed and area-averaged, so that
    fine detail (lines, specks) keeps its integrated intensity at any size: at the quick size a
    speck is a faint dot and a cluster a faint mottled patch or streak, as on a detector with
    large pixels. ``rng`` is the view's (normal structures differ between views; ``None``: the
    finding alone); the finding draws from its breast's ``lesion["seed"]`` (the same lesion in
    both views)."""
    height, width = shape
    factor = max(1, -(-SUPERSAMPLE // height))  # ceil
    scale = scale * factor
    canvas = np.zeros((height * factor, width * factor), np.float32)
    contrast = DIFFICULTY[difficulty] if isinstance(difficulty, str) else float(difficulty)
    n_lines = int(rng.integers(*BREAST_LINES)) if rng is not None else 0
    if finding != "none":
        lesion_rng = _rng(lesion["seed"])
        y, x = _lesion_center(geometry, lesion, view)
        center_px = (y * scale, x * scale)
        nipple_axis = _nipple_direction(geometry, y, x)
        if finding in MASS_FINDINGS:
            _draw_core(canvas, center_px, lesion, MASS_FINDINGS[finding], scale, contrast, lesion_rng)
        if finding in CONVERGING_FINDINGS:
            start = CONVERGING_FINDINGS[finding]
            n_lines -= _draw_converging(canvas, center_px, lesion, start, scale, contrast, lesion_rng)
        if finding in CALC_FINDINGS:
            n = int(lesion_rng.integers(*CALC_COUNT))
            extent = lesion_rng.uniform(*CALC_EXTENT)
            axis = nipple_axis + CALC_FINDINGS[finding] + lesion_rng.normal(0, CALC_AXIS_SPREAD)
            offsets, elongations, angles = _calc_cast(n, axis, extent, lesion_rng)
            _draw_specks(canvas, center_px, offsets, elongations, angles, scale, contrast, lesion_rng)
    # normal lines: ducts and vessels run toward the nipple, ligaments any way
    nipple = (geometry["cy"] * scale, geometry["a"] * scale)
    for length, width_px, strength, bend in _line_draws(rng, max(n_lines, 0), scale, contrast) if rng is not None else ():
        y, x = _breast_point(geometry, rng.uniform(0.1, 0.9), rng.uniform(-0.9, 0.9), view)
        begin = (y * scale, x * scale)
        toward = np.arctan2(nipple[0] - begin[0], nipple[1] - begin[1])
        angle = toward + rng.normal(0, 0.4) if rng.random() < 0.6 else rng.uniform(0, 2 * np.pi)
        _draw_line(canvas, begin, angle, length, width_px, strength, bend)
    return canvas.reshape(height, factor, width, factor).mean(axis=(1, 3))


# ----------------------------------------------------------------------------- one image


def render_view(shape: tuple[int, int], traits: dict, geometry: dict, finding: str,
                lesion: dict, view: str, rng, difficulty="standard") -> np.ndarray:
    """One canonical image (chest wall left), float32 in [0, 1]."""
    height, width = shape
    scale = float(height)  # pixels per image height
    a, cy, p = geometry["a"], geometry["cy"], geometry["squareness"]
    bump, bump_angle = geometry["nipple"]
    # the breast lies in the first `cols` columns; the rest is background, not worth computing
    reach = a * (1 + bump + sum(abs(e) for e, _ in geometry["harmonics"]))
    cols = min(width, int(reach * scale) + 2)
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / scale)[:, None]
    xs = ((np.arange(cols, dtype=np.float32) + 0.5) / scale)[None, :]

    # silhouette: normalised radius rho (1 on the skin) and distance to the skin
    dy = ys - cy
    b = np.where(dy < 0, geometry["b_up"], geometry["b_down"]).astype(np.float32)
    rho = ((xs / a) ** p + np.abs(dy / b) ** p) ** (1 / p)
    theta = np.arctan2(dy / b, xs / a)
    outline = 1 + sum(e * np.cos(k * theta + ph) for k, (e, ph) in enumerate(geometry["harmonics"], 2))
    outline = outline + bump * np.exp(-0.5 * ((theta - bump_angle) / 0.07) ** 2)
    rho = rho / outline
    skin_distance = (1 - rho) * np.sqrt(xs * xs + dy * dy) / np.maximum(rho, 1e-3)  # along the ray
    mask = np.clip(skin_distance * scale + 0.5, 0, 1)
    inside = np.clip(skin_distance, 0, None)

    # fibroglandular tissue: power-law noise, part of it resampled on a fan around the nipple
    # (stretched along the radius) so that structures run toward the nipple like ducts
    isotropic, source = _power_law_pair(rng, shape)
    isotropic = isotropic[:, :cols]
    nipple_x = a * (1 + bump)
    to_nipple = np.sqrt((nipple_x - xs) ** 2 + dy * dy)
    fan = np.arctan2(dy, nipple_x - xs)
    ducts = ndimage.map_coordinates(source, [fan * (0.8 * scale), to_nipple * (0.45 * scale)],
                                    order=1, mode="grid-wrap")
    ducts = ducts * _smoothstep(to_nipple, 0.0, 0.15)  # no hair-thin rays at the nipple itself
    field = 0.8 * isotropic + 0.6 * ducts
    patchiness = sum(
        0.2 * np.cos(2 * np.pi * (fy * ys + fx * xs) + phase)
        for fy, fx, phase in rng.uniform((-1.5, -1.5, 0), (1.5, 1.5, 2 * np.pi), size=(3, 3)).tolist()
    )
    envelope = _smoothstep(rho, 0.97, 0.55) * _smoothstep(xs / a, 0.02, 0.2) * (1 + patchiness)
    fraction = 0.1 + 0.55 * traits["density"]
    threshold = float(special.ndtri(1 - fraction) * field.std())
    dense = np.clip(envelope, 0, 1) * (0.5 + 0.5 * np.tanh((field - threshold) / 0.7))

    thickness = 0.5 + 0.5 * (1 - np.exp(-inside / 0.05))
    tissue = thickness * (traits["fat"] + traits["gland"] * dense + 0.015 * isotropic)
    pectoral = geometry["pectoral"]
    if pectoral is not None:
        muscle = np.clip((_pectoral_edge(pectoral, ys) - xs) * (0.5 * scale) + 0.5, 0, 1)
        shade = pectoral["level"] * (1 - 0.25 * ys / pectoral["height"] + 0.04 * isotropic)
        tissue = tissue * (1 - muscle) + shade * muscle

    lesions = _draw_structures((height, cols), geometry, finding, lesion, view, scale, difficulty, rng)
    skin = 0.12 * np.exp(-0.5 * (inside / max(0.0025, 0.7 / scale)) ** 2)
    breast = tissue + skin + thickness * lesions

    # background near 0; quantum-like noise growing with the signal
    noise = rng.standard_normal(shape, dtype=np.float32)
    image = 0.015 + 0.006 * noise
    image[:, :cols] += mask * (breast - 0.015) + 0.008 * np.sqrt(mask * breast) * noise[:, :cols]
    return np.clip(image, 0, 1)


# ----------------------------------------------------------------------------- public API


def generate(image_size=(768, 384), n_patients=115, n_benign=287, n_malignant=100, seed=0,
             orientation="canonical", difficulty="standard", on_image: Callable[[], None] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Generate the synthetic cohort.

    Args:
        image_size: ``(height, width)`` in pixels.
        n_patients, n_benign, n_malignant: cohort shape; images = n_benign + n_malignant, each
            patient contributes 2-4 of them.
        seed: everything is a function of it (same seed, bit-identical output).
        orientation: ``"canonical"`` (every chest wall on the left) or ``"laterality"`` (as
            stored by scanners: L breasts with the chest wall on the left edge, R on the right).
        on_image: called after each image is drawn (a progress bar's tick).

    Returns:
        the sample table (columns :data:`TABLE_COLUMNS`, one row per image, ordered by patient,
        laterality and view) and the images, float16 ``(N, H, W)`` in [0, 1].

    Raises:
        ValueError: sizes or counts that cannot form such a cohort.
    """
    table, render = generate_lazily(image_size, n_patients, n_benign, n_malignant, seed, orientation, difficulty)
    images = np.empty((len(table), *render.shape), np.float16)
    for i in range(len(table)):
        images[i] = render(i)
        if on_image is not None:
            on_image()
    return table, images


class ImageRenderer:
    """Renders image ``i`` of a planned cohort on its own (every image draws from its own seed,
    so any subset, in any order or process, gives the bytes :func:`generate` gives)."""

    def __init__(self, shape: tuple[int, int], seed: int, orientation: str, images: list[tuple[Breast, str]],
                 difficulty="standard"):
        self.shape, self.seed, self.orientation, self.images = shape, seed, orientation, images
        self.difficulty = difficulty

    def plan(self, i: int):
        """Image ``i``'s ``(breast, view, traits, geometry, lesion, rng)``, each drawn from its own
        seed; ``rng`` is the view's generator, left where rendering the view picks it up."""
        breast, view = self.images[i]
        seed, (height, width) = self.seed, self.shape
        side = 0 if breast.laterality == "L" else 1
        traits = _patient_traits(_rng(seed, 1, breast.patient))
        lesion = _plan_lesion(breast.finding, _rng(seed, 2, breast.patient, side))
        rng = _rng(seed, 3, breast.patient, side, int(view == "MLO"))
        geometry = _view_geometry(traits, view, width / height, rng)
        return breast, view, traits, geometry, lesion, rng

    def __call__(self, i: int) -> np.ndarray:
        breast, view, traits, geometry, lesion, rng = self.plan(i)
        image = render_view(self.shape, traits, geometry, breast.finding, lesion, view, rng, self.difficulty)
        if self.orientation == "laterality" and breast.laterality == "R":
            image = image[:, ::-1]
        return image.astype(np.float16)


def generate_lazily(image_size=(768, 384), n_patients=115, n_benign=287, n_malignant=100, seed=0,
                    orientation="canonical", difficulty="standard") -> tuple[pd.DataFrame, ImageRenderer]:
    """:func:`generate`'s sample table at once and its images on demand (``render(i)``), for
    cohorts too large to hold in memory."""
    height, width = _validate(image_size, n_patients, n_benign, n_malignant, seed, orientation, difficulty)
    breasts = plan_cohort(n_patients, n_benign, n_malignant, seed)
    digits = max(3, len(str(n_patients - 1)))
    rows, images = [], []
    for breast in breasts:
        for view in breast.views:
            patient_id = f"P{breast.patient:0{digits}d}"
            rows.append((f"{patient_id}_{breast.laterality}_{view}", patient_id, breast.label,
                         breast.laterality, view, breast.finding, density_category(seed, breast.patient),
                         LESION_TYPES[breast.finding]))
            images.append((breast, view))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return table, ImageRenderer((height, width), seed, orientation, images, difficulty)


def write_png_set(out_dir, image_size=(768, 384), seed=0, **generate_kwargs) -> pathlib.Path:
    """Write the cohort as 16-bit grayscale PNGs plus ``labels.csv``; return the CSV path.

    Images go to ``<out_dir>/images/<image_id>.png`` (value ``round(x * 65535)``), stored as a
    scanner would (R breasts mirrored, matching their ``laterality`` column, so the ``manifest``
    dataset's preprocessing turns them back); the CSV has the table columns plus ``path``,
    relative to ``out_dir``.
    """
    generate_kwargs.setdefault("orientation", "laterality")
    table, images = generate(image_size=image_size, seed=seed, **generate_kwargs)
    return write_png_files(out_dir, table, images)


def write_png_files(out_dir, table: pd.DataFrame, images: np.ndarray,
                    on_image: Callable[[], None] | None = None) -> pathlib.Path:
    """Write ``generate(..., orientation="laterality")``'s output as :func:`write_png_set` does
    (``on_image`` is called after each file); return the CSV path."""
    from PIL import Image

    out_dir = pathlib.Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for image_id, image in zip(table["image_id"], images):
        relative = f"images/{image_id}.png"
        pixels = np.round(image.astype(np.float64) * 65535).astype(np.uint16)
        picture = Image.fromarray(pixels)  # uint16 -> mode "I;16"
        atomic_write(out_dir / relative, lambda fh: picture.save(fh, format="PNG"))  # never half a file
        paths.append(relative)
        if on_image is not None:
            on_image()
    table = table.assign(path=paths)
    csv_path = out_dir / "labels.csv"
    atomic_write_text(csv_path, table.to_csv(index=False))
    return csv_path

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
- Findings (dealt per breast, so that each class has its table's mix exactly):
  benign: ``none`` (23%, INbreast's share of BI-RADS 1 among its BI-RADS 1-2 images: 67 of
  287), ``round_mass`` / ``oval_mass`` (circumscribed, sharp margin), ``coarse_calcs`` (a few
  large, dense, round calcifications scattered over a few cm) or ``oval_mass+calcs`` (a
  fibroadenoma with coarse "popcorn" calcifications);
  malignant: ``spiculated_mass`` (irregular, ill-defined core with long radiating spicules),
  ``pleomorphic_calcs`` (many fine, elongated, irregular specks cast in a few ducts that branch
  toward the nipple: a segmental, fine-linear branching distribution) or both.
  Lesions are sized as real ones (masses 2-5 cm across, a pixel is 0.33 mm at 768x384 and 2 mm
  at 128x64), so the class-defining shape survives at the quick profile's 128x64: spicules
  become lines, a pleomorphic cluster a short mottled streak, coarse calcifications separate dots.
  They are conspicuous (a mass adds more than the densest tissue stands above fat), so that a
  small CNN learns them from a few hundred images at 128x64.
- Why the class cannot be read from non-spatial summaries (an intensity histogram, the brightest
  pixels, global moments, a thumbnail), only from shape (spiculated vs smooth margin) and
  distribution (fine linear-branching vs coarse scattered calcifications):
  every malignant finding has a benign counterpart that is as bright (its brightest pixels) and
  about as large (the intensity it adds) at the quick size, drawn as often among the breasts
  that have a finding (a circumscribed mass for a spiculated one, coarse for pleomorphic
  calcifications, a fibroadenoma with calcifications for a spiculated mass with calcifications);
  the finding is summed before it saturates (``SATURATION``), so that calcifications on a mass
  are capped the same way in both classes. What remains is that normal images are benign: a
  summary that detected *any* finding perfectly would reach an AUC of 0.615.
  Lesions are rendered at least ``SUPERSAMPLE`` pixels high and area-averaged (details below a
  pixel are further widened to half a pixel with their integrated intensity kept), so they fade
  as they would on a detector with large pixels.

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

# (3 and 4 were drafts of this generator whose images may sit in caches: skipped, never reused)
VERSION = 5  # bump whenever generate() output changes for a given seed; for cache keys
# Shares of the findings per breast. Benign: "none" is INbreast's BI-RADS 1 share (67 of its 287
# BI-RADS 1-2 images); the other benign findings mirror the malignant ones (spiculated mass ->
# round or oval mass, pleomorphic -> coarse calcifications, both -> fibroadenoma with
# calcifications), each drawn as often among the breasts that have a finding.
BENIGN_FINDINGS = {"none": 0.23, "round_mass": 0.18, "oval_mass": 0.17, "coarse_calcs": 0.31,
                   "oval_mass+calcs": 0.11}
MALIGNANT_FINDINGS = {"spiculated_mass": 0.45, "pleomorphic_calcs": 0.4,
                      "spiculated_mass+calcs": 0.15}
ORIENTATIONS = ("canonical", "laterality")
TABLE_COLUMNS = ("image_id", "patient_id", "label", "laterality", "view", "finding")
MIN_SIZE = 16
BETA = 3.0  # power-law exponent of the anatomical background (Burgess et al. 2001)
SINGLE_VIEW_SHARE = 0.1  # target share of patients with one breast seen in a single view
# Lesion sizes in image heights (about 25 cm: 0.04 is 1 cm), ranges drawn uniformly. Large
# enough that the class-defining shape survives at 128x64 (one pixel is 2 mm there). Contrasts
# are what a lesion adds to the image (the densest tissue is about 0.3-0.4 above fat); they are
# calibrated so that at 128x64 each malignant finding is as bright as its benign counterpart
# (tests/test_synthetic_mammo.py measures it).
MASS_RADIUS = (0.035, 0.08)  # both classes (round and oval masses drawn CIRCUMSCRIBED_SCALE wider)
MASS_CONTRAST = (0.5, 0.6)  # both classes: peak of a round or oval mass, a spiculated core's plateau
CIRCUMSCRIBED_SCALE = 1.3  # round or oval mass radius, in mass radii: about the footprint of a
#                            spiculated mass's core and spicules
SPICULATED_CORE = 0.65  # core radius of a spiculated mass, fraction of its radius
SPICULE_COUNT = (14, 24)
SPICULE_LENGTH = (1.2, 3.0)  # beyond the core, in mass radii
SPICULE_WIDTH = (0.006, 0.009)  # Gaussian sigma (5-7 px at 768x384, 0.8-1.2 px at 128x64)
SPICULE_STRENGTH = (0.9, 1.1)  # peak at the core, fraction of the mass contrast (then tapering)
PLEOMORPHIC_COUNT = (30, 60)
PLEOMORPHIC_LENGTH = (0.04, 0.08)  # extent along the ducts (1-2 cm)
PLEOMORPHIC_DUCTS = (2, 4)  # number of ducts the specks are cast in
PLEOMORPHIC_FAN = 0.35  # the ducts fan out by up to this angle (radians) from the nipple direction
PLEOMORPHIC_JITTER = 0.002  # scatter of specks across a duct
PLEOMORPHIC_RADIUS = (0.0012, 0.0028)
PLEOMORPHIC_CONTRAST = (0.5, 0.8)  # per speck; many fine specks overlap into the streak's peak
COARSE_COUNT = (3, 8)
COARSE_SPREAD = (0.04, 0.09)  # scattered within this radius
COARSE_RADIUS = (0.004, 0.008)
COARSE_CONTRAST = (0.7, 1.0)  # per calcification; a few large ones, partly averaged away at 2 mm
SATURATION = 0.6  # soft ceiling on what a finding adds (its parts summed: calcifications on a mass)
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


def _validate(image_size, n_patients, n_benign, n_malignant, seed, orientation) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"image_size must be at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
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


def _patient_traits(rng) -> dict:
    return {
        "density": rng.beta(2.0, 2.2),  # 0 fatty .. 1 extremely dense
        "reach": rng.uniform(0.62, 0.9),  # nipple distance from chest wall, fraction of width
        "half_height": rng.uniform(0.28, 0.4),  # CC half-height, in image heights
        "squareness": rng.uniform(1.7, 2.2),  # super-ellipse exponent
        "fat": rng.uniform(0.3, 0.42),  # well above the background: Otsu finds the whole breast
        "gland": rng.uniform(0.3, 0.42),
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


# ----------------------------------------------------------------------------- lesions


def _plan_lesion(finding: str, rng) -> dict:
    """Lesion parameters shared by both views of a breast (sizes in image heights)."""
    lesion = {
        "depth": rng.uniform(0.2, 0.75),  # from the nipple toward the chest wall, fraction of reach
        "offset": {"CC": rng.uniform(-0.6, 0.6), "MLO": rng.uniform(-0.3, 0.6)},
        "seed": int(rng.integers(2**31)),
    }
    if "mass" in finding:
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
    y0, y1 = max(int(cy + y_lo), 0), min(int(cy + y_hi) + 2, height)
    x0, x1 = max(int(cx + x_lo), 0), min(int(cx + x_hi) + 2, width)
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    return (slice(y0, y1), slice(x0, x1)), dy, dx


def _paint(canvas: np.ndarray, window, value: np.ndarray, add: bool = False) -> None:
    """Add ``value`` to ``canvas[window]``, or merge by the maximum (``add=False``: the spicules
    of a mass run out of its core, they do not thicken it)."""
    if add:
        canvas[window] += value
    else:
        np.maximum(canvas[window], value, out=canvas[window])


def _outline(dy, dx, lobes: float, rng):
    """Radial outline factor (1 = circle) with random shape harmonics 2-6 of std ``lobes``."""
    theta = np.arctan2(dy, dx)
    return 1 + sum(
        rng.normal(0, lobes) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 7)
    )


def _draw_circumscribed(canvas, center_px, lesion: dict, oval: bool, scale: float, rng) -> None:
    """Round or oval mass: projected thickness of an ellipsoid, sharp margin."""
    radius = lesion["radius"] * CIRCUMSCRIBED_SCALE * scale
    window, dy, dx = _stamp(canvas, center_px, radius * 1.6)
    if oval:
        ratio, tilt = rng.uniform(0.5, 0.75), rng.uniform(0, np.pi)
        u = dx * np.cos(tilt) + dy * np.sin(tilt)
        v = -dx * np.sin(tilt) + dy * np.cos(tilt)
        q = np.hypot(u * np.sqrt(ratio), v / np.sqrt(ratio)) / radius  # same area as the circle
    else:
        q = np.hypot(dy, dx) / (radius * _outline(dy, dx, 0.015, rng))
    _paint(canvas, window, lesion["contrast"] * np.sqrt(np.clip(1 - q * q, 0, 1)))


def _draw_spiculated(canvas, center_px, lesion: dict, scale: float, rng) -> None:
    """Irregular, ill-defined core with radiating spicules (straight or gently curved lines that
    taper toward the tip). The core is smaller than a circumscribed mass of the same ``radius``,
    so core plus spicules add about as much intensity as the smooth mass."""
    radius, contrast = lesion["radius"] * scale, lesion["contrast"]
    core = SPICULATED_CORE * radius
    window, dy, dx = _stamp(canvas, center_px, core * 1.6)
    q = np.hypot(dy, dx) / (core * _outline(dy, dx, 0.12, rng))
    _paint(canvas, window, contrast * special.expit((1 - q) / 0.12) * np.clip(1.3 - 0.3 * q, 0, 1))
    n = int(rng.integers(*SPICULE_COUNT))
    for length, width, strength, angle, bend in zip(
        radius * rng.uniform(*SPICULE_LENGTH, size=n),
        rng.uniform(*SPICULE_WIDTH, size=n) * scale,
        contrast * rng.uniform(*SPICULE_STRENGTH, size=n),
        rng.uniform(0, 2 * np.pi, size=n),
        rng.normal(0, 0.12, size=n) / radius,
    ):
        sigma = max(width, 0.5)  # below a pixel: widened, integrated intensity kept
        start, stop = 0.6 * core, 0.8 * core + length
        c, s = np.cos(angle), np.sin(angle)
        sag = abs(bend) * length**2 + 3 * sigma
        ys = [start * s, stop * s]
        xs = [start * c, stop * c]
        box = (min(ys) - sag, max(ys) + sag, min(xs) - sag, max(xs) + sag)
        window, dy, dx = _stamp(canvas, center_px, 0, box)
        along = dx * c + dy * s - 0.8 * core  # from the core's margin outward
        across = -dx * s + dy * c - bend * np.clip(along, 0, None) ** 2
        t = np.clip(along / length, 0, 1)
        taper = _smoothstep(along, 0, 0.3 * core) * (1 - t)
        thin = sigma * (1 - 0.5 * t)  # narrower toward the tip
        _paint(canvas, window, strength * width / sigma * taper * np.exp(-0.5 * (across / thin) ** 2))


def _draw_specks(canvas, center_px, offsets, radii, elongations, angles, contrasts, scale, flat_top):
    """Add calcification specks (anisotropic blobs); integrated intensity kept below a pixel."""
    for (oy, ox), r, e, angle, c in zip(offsets, radii, elongations, angles, contrasts):
        sigma_major, sigma_minor = r * np.sqrt(e) * scale, r / np.sqrt(e) * scale
        s1, s2 = max(sigma_major, 0.5), max(sigma_minor, 0.5)
        amplitude = c * sigma_major * sigma_minor / (s1 * s2)
        centre = (center_px[0] + oy * scale, center_px[1] + ox * scale)
        window, dy, dx = _stamp(canvas, centre, 3 * s1)
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / s1
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / s2
        r2 = u * u + v * v
        _paint(canvas, window, amplitude * np.exp(-0.5 * (r2 * r2 if flat_top else r2)), add=True)


def _draw_pleomorphic(canvas, center_px, axis: float, scale, rng) -> None:
    """Malignant: many fine, elongated, irregular specks cast in a few ducts that branch toward
    the nipple (``axis``, radians): a segmental, fine-linear branching distribution."""
    n = int(rng.integers(*PLEOMORPHIC_COUNT))
    length = rng.uniform(*PLEOMORPHIC_LENGTH)
    n_ducts = int(rng.integers(*PLEOMORPHIC_DUCTS))
    ducts = axis + rng.uniform(-PLEOMORPHIC_FAN, PLEOMORPHIC_FAN, size=n_ducts)
    direction = ducts[rng.integers(len(ducts), size=n)]
    along = rng.uniform(0, length, size=n)
    across = rng.normal(0, PLEOMORPHIC_JITTER, size=n)
    start = -0.5 * length * np.array([np.sin(axis), np.cos(axis)])  # centred on the lesion
    offsets = start + np.stack([along * np.sin(direction) + across * np.cos(direction),
                                along * np.cos(direction) - across * np.sin(direction)], axis=1)
    radii = rng.uniform(*PLEOMORPHIC_RADIUS, size=n)
    _draw_specks(canvas, center_px, offsets, radii, rng.uniform(1.5, 4, size=n),
                 direction + rng.normal(0, 0.3, size=n), rng.uniform(*PLEOMORPHIC_CONTRAST, size=n),
                 scale, flat_top=False)


def _draw_coarse(canvas, center_px, scale, rng) -> None:
    """Benign: a few large, round, smooth calcifications scattered over a wide area."""
    n = int(rng.integers(*COARSE_COUNT))
    spread = rng.uniform(*COARSE_SPREAD)
    angle, dist = rng.uniform(0, 2 * np.pi, size=n), spread * np.sqrt(rng.uniform(0.05, 1, size=n))
    offsets = np.stack([dist * np.sin(angle), dist * np.cos(angle)], axis=1)
    radii = rng.uniform(*COARSE_RADIUS, size=n)
    _draw_specks(canvas, center_px, offsets, radii, rng.uniform(1, 1.5, size=n),
                 rng.uniform(0, np.pi, size=n), rng.uniform(*COARSE_CONTRAST, size=n), scale,
                 flat_top=True)


def _saturate(added: np.ndarray) -> np.ndarray:
    """Soft ceiling at ``SATURATION`` on what a finding adds: linear for faint detail, so
    overlapping parts (specks of a cluster, calcifications within a mass) stop adding up."""
    return added / (1 + (added / SATURATION) ** 4) ** 0.25


def _lesion_center(geometry: dict, lesion: dict, view: str) -> tuple[float, float]:
    """Lesion centre (y, x) in image heights: same depth in both views, view-specific offset."""
    x = geometry["a"] * (1 - lesion["depth"])
    offset = lesion["offset"][view]
    y = geometry["cy"] + 0.7 * offset * _half_extent(geometry, x, upward=offset < 0)
    pectoral = geometry["pectoral"]
    if pectoral is not None:  # keep it out of the muscle: below the border at this depth
        below_muscle = pectoral["height"] * (1 - min(x / pectoral["width"], 1) ** (1 / pectoral["curve"]))
        y = max(y, below_muscle + 0.04)
    return float(np.clip(y, 0.05, 0.95)), float(x)


def _draw_finding(shape: tuple[int, int], geometry: dict, finding: str, lesion: dict, view: str,
                  scale: float) -> np.ndarray:
    """The finding's added intensity on a ``shape`` canvas, rendered ``SUPERSAMPLE`` times finer
    than needed and area-averaged, so that fine detail (spicules, specks) keeps its integrated
    intensity at any size; at the quick size a calcification cluster becomes a mottled streak and a
    spicule a faint line, as they would on a detector with large pixels."""
    height, width = shape
    if finding == "none":
        return np.zeros(shape, np.float32)
    factor = max(1, -(-SUPERSAMPLE // height))  # ceil
    scale = scale * factor
    rng = _rng(lesion["seed"])  # same lesion shape in both views
    y, x = _lesion_center(geometry, lesion, view)
    center_px = (y * scale, x * scale)
    total = np.zeros((height * factor, width * factor), np.float32)
    draws = []
    if finding in ("round_mass", "oval_mass", "oval_mass+calcs"):
        oval = finding.startswith("oval")
        draws.append(lambda c: _draw_circumscribed(c, center_px, lesion, oval, scale, rng))
    if finding in ("spiculated_mass", "spiculated_mass+calcs"):
        draws.append(lambda c: _draw_spiculated(c, center_px, lesion, scale, rng))
    if finding in ("coarse_calcs", "oval_mass+calcs"):
        draws.append(lambda c: _draw_coarse(c, center_px, scale, rng))
    if finding in ("pleomorphic_calcs", "spiculated_mass+calcs"):
        axis = np.arctan2(geometry["cy"] - y, geometry["a"] - x)  # toward the nipple
        draws.append(lambda c: _draw_pleomorphic(c, center_px, axis, scale, rng))
    for draw in draws:  # lesions of one breast add up (calcifications within a mass), then saturate
        layer = np.zeros_like(total)
        draw(layer)
        total += layer
    return _saturate(total).reshape(height, factor, width, factor).mean(axis=(1, 3))


# ----------------------------------------------------------------------------- one image


def render_view(shape: tuple[int, int], traits: dict, geometry: dict, finding: str,
                lesion: dict, view: str, rng) -> np.ndarray:
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

    lesions = _draw_finding((height, cols), geometry, finding, lesion, view, scale)
    skin = 0.12 * np.exp(-0.5 * (inside / max(0.0025, 0.7 / scale)) ** 2)
    breast = tissue + skin + thickness * lesions

    # background near 0; quantum-like noise growing with the signal
    noise = rng.standard_normal(shape, dtype=np.float32)
    image = 0.015 + 0.006 * noise
    image[:, :cols] += mask * (breast - 0.015) + 0.008 * np.sqrt(mask * breast) * noise[:, :cols]
    return np.clip(image, 0, 1)


# ----------------------------------------------------------------------------- public API


def generate(image_size=(768, 384), n_patients=115, n_benign=287, n_malignant=100, seed=0,
             orientation="canonical", on_image: Callable[[], None] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
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
    table, render = generate_lazily(image_size, n_patients, n_benign, n_malignant, seed, orientation)
    images = np.empty((len(table), *render.shape), np.float16)
    for i in range(len(table)):
        images[i] = render(i)
        if on_image is not None:
            on_image()
    return table, images


class ImageRenderer:
    """Renders image ``i`` of a planned cohort on its own (every image draws from its own seed,
    so any subset, in any order or process, gives the bytes :func:`generate` gives)."""

    def __init__(self, shape: tuple[int, int], seed: int, orientation: str, images: list[tuple[Breast, str]]):
        self.shape, self.seed, self.orientation, self.images = shape, seed, orientation, images

    def __call__(self, i: int) -> np.ndarray:
        breast, view = self.images[i]
        seed, (height, width) = self.seed, self.shape
        side = 0 if breast.laterality == "L" else 1
        traits = _patient_traits(_rng(seed, 1, breast.patient))
        lesion = _plan_lesion(breast.finding, _rng(seed, 2, breast.patient, side))
        rng = _rng(seed, 3, breast.patient, side, int(view == "MLO"))
        geometry = _view_geometry(traits, view, width / height, rng)
        image = render_view((height, width), traits, geometry, breast.finding, lesion, view, rng)
        if self.orientation == "laterality" and breast.laterality == "R":
            image = image[:, ::-1]
        return image.astype(np.float16)


def generate_lazily(image_size=(768, 384), n_patients=115, n_benign=287, n_malignant=100, seed=0,
                    orientation="canonical") -> tuple[pd.DataFrame, ImageRenderer]:
    """:func:`generate`'s sample table at once and its images on demand (``render(i)``), for
    cohorts too large to hold in memory."""
    height, width = _validate(image_size, n_patients, n_benign, n_malignant, seed, orientation)
    breasts = plan_cohort(n_patients, n_benign, n_malignant, seed)
    digits = max(3, len(str(n_patients - 1)))
    rows, images = [], []
    for breast in breasts:
        for view in breast.views:
            patient_id = f"P{breast.patient:0{digits}d}"
            rows.append((f"{patient_id}_{breast.laterality}_{view}", patient_id, breast.label,
                         breast.laterality, view, breast.finding))
            images.append((breast, view))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return table, ImageRenderer((height, width), seed, orientation, images)


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
        Image.fromarray(pixels).save(out_dir / relative)  # uint16 -> mode "I;16"
        paths.append(relative)
        if on_image is not None:
            on_image()
    table = table.assign(path=paths)
    csv_path = out_dir / "labels.csv"
    table.to_csv(csv_path, index=False)
    return csv_path

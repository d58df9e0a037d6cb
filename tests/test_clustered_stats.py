"""Patient-clustered statistics of ssl_bench.report.stats (Obuchowski 1997, cluster bootstrap, Holm
1979) and the clinicians' metrics of ssl_bench.experiment.clinical.

The simulations draw patients with 2-4 images sharing a patient random effect (a known
within-patient correlation) and check the clustered standard errors three ways: against the
brute-force patient bootstrap on one data set, against the true sampling spread of the AUC over
many simulated data sets, and against DeLong's image-level SE, which is too small when images
correlate and right when they do not. Figures measured when this file was written are quoted in
the comments; the assertions leave room for them.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from ssl_bench.experiment.clinical import (
    aggregate_scores,
    auprc,
    operating_point_at_specificity,
    sensitivity_at_specificity,
    youden_threshold,
)
from ssl_bench.report.stats import (
    auc_confidence_interval,
    auc_variance,
    cluster_bootstrap,
    clustered_accuracy_test,
    clustered_auc_confidence_interval,
    clustered_auc_variance,
    delong_compare,
    delong_covariance,
    holm_adjust,
    obuchowski_compare,
    obuchowski_covariance,
    obuchowski_test,
    paired_bootstrap_accuracy,
    paired_cluster_bootstrap,
)


def fast_auc(y, s) -> float:
    """Mann-Whitney AUC from midranks (ties one half): roc_auc_score's value, without its input
    checks, which cost about 3 ms a call (this: about 30 us), for loops over resamples."""
    y = np.asarray(y, dtype=bool)
    m = int(y.sum())
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    midranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.ravel()]
    return float((midranks[y].sum() - m * (m + 1) / 2) / (m * (y.size - m)))


def simulate_patients(rng, n_patients=150, sd_patient=1.0, effect_a=1.0, effect_b=0.6):
    """Patient-level labels (prevalence 0.4), 2-4 images per patient, two methods' scores.

    score = effect * label + patient effect + image noise N(0, 1); each method's patient effect
    (SD ``sd_patient``) is 0.6 shared + 0.8 own, so the methods correlate and the difference of
    their AUCs still carries patient variance. Within-patient correlation of one method's
    scores: sd_patient^2 / (sd_patient^2 + 1) (0.5 at the default).
    """
    sizes = rng.integers(2, 5, n_patients)
    pid = np.repeat(np.arange(n_patients), sizes)
    y = (rng.random(n_patients) < 0.4).astype(int)[pid]
    shared = rng.normal(size=n_patients)

    def method(effect):
        u = sd_patient * (0.6 * shared + 0.8 * rng.normal(size=n_patients))
        return effect * y + u[pid] + rng.normal(size=y.size)

    return y, method(effect_a), method(effect_b), pid


def simulate_breasts(rng, n_patients=150):
    """1-2 breasts per patient, 2 views per breast (2-4 images), breast labels (prevalence 0.3):
    some patients hold a malignant and a benign breast, so Obuchowski's S11 term is at work.
    Scores: label + patient effect (SD 0.5) + breast effect (SD 1, shared by the two views) +
    noise; the second method is weaker and shares part of the first one's effects."""
    breasts = rng.integers(1, 3, n_patients)
    n_breasts = int(breasts.sum())
    pid = np.repeat(np.repeat(np.arange(n_patients), breasts), 2)
    bid = np.repeat(np.arange(n_breasts), 2)
    y = (rng.random(n_breasts) < 0.3).astype(int)[bid]

    def effects():
        return (0.5 * rng.normal(size=n_patients))[pid] + rng.normal(size=n_breasts)[bid]

    shared = effects()
    a = 1.2 * y + 0.7 * shared + 0.7 * effects() + rng.normal(size=y.size)
    b = 0.8 * y + 0.7 * shared + 0.7 * effects() + rng.normal(size=y.size)
    return y, a, b, pid


# --- Obuchowski (1997): exact properties ---------------------------------------------------------


def obuchowski_by_hand(y, scores, clusters):
    """Obuchowski's (1997) formulas as loops over clusters and images, for two score vectors."""
    pos, neg = y == 1, y == 0
    ids = list(dict.fromkeys(clusters.tolist()))
    n_cl, m_all, n_all = len(ids), pos.sum(), neg.sum()

    def psi(x, z):
        return (x > z) + 0.5 * (x == z)

    a_comp, b_comp, aucs = [], [], []
    for s in scores:
        auc = np.mean([[psi(x, z) for z in s[neg]] for x in s[pos]])
        aucs.append(auc)
        a_i, b_i = [], []
        for c in ids:
            here = clusters == c
            xs, zs = s[here & pos], s[here & neg]
            a_i.append(sum(psi(x, s[neg]).mean() for x in xs) - len(xs) * auc)
            b_i.append(sum(psi(s[pos], z).mean() for z in zs) - len(zs) * auc)
        a_comp.append(np.array(a_i))
        b_comp.append(np.array(b_i))
    i10 = len({c for c, p in zip(clusters.tolist(), pos) if p})
    i01 = len({c for c, p in zip(clusters.tolist(), neg) if p})
    cov = np.empty((2, 2))
    for r in range(2):
        for t in range(2):
            s10 = i10 / ((i10 - 1) * m_all) * np.sum(a_comp[r] * a_comp[t])
            s01 = i01 / ((i01 - 1) * n_all) * np.sum(b_comp[r] * b_comp[t])
            s11 = n_cl / (n_cl - 1) * np.sum(a_comp[r] * b_comp[t] + a_comp[t] * b_comp[r]) / 2
            cov[r, t] = s10 / m_all + s01 / n_all + 2 * s11 / (m_all * n_all)
    return np.array(aucs), cov


def test_obuchowski_matches_its_formulas_with_ties_and_mixed_patients():
    rng = np.random.default_rng(3)
    y, a, b, pid = simulate_breasts(rng, n_patients=25)
    a, b = np.round(a, 1), np.round(b, 1)  # ties across and within patients
    clusters = np.array([f"P{p:03d}" for p in pid])
    aucs, cov = obuchowski_covariance(y, clusters, a, b)
    ref_aucs, ref_cov = obuchowski_by_hand(y, [a, b], clusters)
    assert aucs == pytest.approx([roc_auc_score(y, a), roc_auc_score(y, b)], rel=1e-12)
    assert aucs == pytest.approx(ref_aucs, rel=1e-12)
    assert cov == pytest.approx(ref_cov, rel=1e-10)
    assert clustered_auc_variance(y, a, clusters) == pytest.approx((aucs[0], cov[0, 0]), rel=1e-12)


def test_one_image_per_patient_reduces_to_delong():
    rng = np.random.default_rng(11)
    n = 120
    y = rng.integers(0, 2, n)
    a = np.round(rng.normal(size=n) + y, 1)
    b = np.round(0.5 * a + rng.normal(size=n), 1)
    patients = rng.permutation(n).astype(str)  # any ids, any order
    aucs, cov = obuchowski_covariance(y, patients, a, b)
    d_aucs, d_cov = delong_covariance(y, a, b)
    assert np.abs(aucs - d_aucs).max() < 1e-12
    assert np.abs(cov - d_cov).max() < 1e-10
    r, d = obuchowski_compare(y, a, b, patients), delong_compare(y, a, b)
    assert r.n_clusters == n
    assert np.abs(np.array(r[:8]) - np.array(d)).max() < 1e-10
    assert obuchowski_test(y, a, b, patients)[2] == pytest.approx(d.p_value, abs=1e-10)
    ci, d_ci = clustered_auc_confidence_interval(y, a, patients), auc_confidence_interval(y, a)
    assert np.abs(np.array(ci) - np.array(d_ci)).max() < 1e-10


def test_obuchowski_ignores_order_and_naming_of_images_and_patients():
    rng = np.random.default_rng(5)
    y, a, b, pid = simulate_breasts(rng, n_patients=40)
    ref = obuchowski_compare(y, a, b, pid)
    perm = rng.permutation(y.size)
    renamed = np.array([f"id-{(p * 7919) % 1000}" for p in pid])  # a bijection of 0..39
    again = obuchowski_compare(y[perm], a[perm], b[perm], renamed[perm])
    assert np.array(again) == pytest.approx(np.array(ref), rel=1e-12)
    assert obuchowski_compare(y, b, a, pid).z == pytest.approx(-ref.z)


def test_obuchowski_identical_methods_give_p_one():
    rng = np.random.default_rng(2)
    y, a, _, pid = simulate_patients(rng, n_patients=30)
    r = obuchowski_compare(y, a, a.copy(), pid)
    assert (r.diff, r.se, r.z, r.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_obuchowski_degenerate_inputs_raise():
    y = np.array([0, 1, 0, 1, 0, 0])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.4])
    with pytest.raises(ValueError, match="single class"):
        clustered_auc_variance(np.zeros(6, int), s, [1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="at least 2 clusters, got 1"):
        clustered_auc_variance(y, s, ["p"] * 6)
    # both positives in one patient: I10 = 1, no degrees of freedom for S10
    with pytest.raises(ValueError, match="got 1 and 3 of 3 clusters"):
        clustered_auc_variance(y, s, [1, 1, 2, 1, 2, 3])
    with pytest.raises(ValueError, match="clusters hold 5 values for 6 labels"):
        clustered_auc_variance(y, s, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="level"):
        obuchowski_compare(y, s, s[::-1], [1, 2, 3, 1, 2, 3], level=1.5)


# --- Obuchowski against the patient bootstrap and the true sampling spread -----------------------


def test_clustered_se_matches_patient_bootstrap_and_exceeds_delong():
    rng = np.random.default_rng(0)
    y, a, b, pid = simulate_patients(rng, n_patients=150, sd_patient=1.0)  # 443 images
    auc, var = clustered_auc_variance(y, a, pid)
    _, var_delong = auc_variance(y, a)
    boot = cluster_bootstrap(y, a, pid, fast_auc, n=2000, seed=1)
    se, se_delong = math.sqrt(var), math.sqrt(var_delong)
    # measured (462 images): SE 0.0391 (Obuchowski), 0.0381 (bootstrap), 0.0260 (DeLong):
    # Obuchowski / bootstrap 1.03, Obuchowski / DeLong 1.51
    assert boot.n_dropped == 0 and boot.estimate == pytest.approx(auc, rel=1e-12)
    assert se == pytest.approx(boot.se, rel=0.10)
    assert se / se_delong > 1.3
    # the difference of two correlated AUCs
    r, d = obuchowski_compare(y, a, b, pid), delong_compare(y, a, b)
    paired = paired_cluster_bootstrap(y, a, b, pid, fast_auc, n=2000, seed=2)
    # measured: SE 0.0518 (Obuchowski), 0.0513 (bootstrap), 0.0354 (DeLong): ratios 1.01, 1.46;
    # p = 0.267 (Obuchowski), 0.253 (bootstrap), 0.104 (DeLong)
    assert r.diff == pytest.approx(paired.diff, rel=1e-12)
    assert r.se == pytest.approx(paired.se, rel=0.10)
    assert r.se / d.se > 1.3
    assert r.p_value > d.p_value  # DeLong's image-level test overstates the evidence


def test_clustered_se_with_mixed_breasts_matches_patient_bootstrap():
    """Patients with one malignant and one benign breast: S11 != 0 and the covariance of the two
    methods' AUCs both enter; the clustered SE still tracks the patient bootstrap."""
    rng = np.random.default_rng(1)
    y, a, b, pid = simulate_breasts(rng, n_patients=150)
    r = obuchowski_compare(y, a, b, pid)
    paired = paired_cluster_bootstrap(y, a, b, pid, fast_auc, n=2000, seed=3)
    # measured (458 images): difference SE 0.0386 (Obuchowski), 0.0393 (bootstrap), 0.0320
    # (DeLong); AUC SE 0.0323 (Obuchowski), 0.0323 (bootstrap), 0.0257 (DeLong)
    assert r.se == pytest.approx(paired.se, rel=0.10)
    se_a = math.sqrt(clustered_auc_variance(y, a, pid)[1])
    boot = cluster_bootstrap(y, a, pid, fast_auc, n=2000, seed=4)
    assert se_a == pytest.approx(boot.se, rel=0.10)


def test_independent_images_clustered_se_agrees_with_delong():
    rng = np.random.default_rng(4)
    y, a, b, pid = simulate_patients(rng, n_patients=150, sd_patient=0.0)
    se = math.sqrt(clustered_auc_variance(y, a, pid)[1])
    se_delong = math.sqrt(auc_variance(y, a)[1])
    boot = cluster_bootstrap(y, a, pid, fast_auc, n=2000, seed=5)
    # measured: 0.0209 (Obuchowski), 0.0228 (DeLong), 0.0213 (bootstrap); difference SE 0.0339
    # (Obuchowski), 0.0356 (DeLong). Over 200 seeds the ratio Obuchowski / DeLong of one study
    # spans 0.89-1.15 (2.5-97.5%): the clustered estimator is noisier, unbiased (next test)
    assert se == pytest.approx(se_delong, rel=0.10)
    assert se == pytest.approx(boot.se, rel=0.10)
    r, d = obuchowski_compare(y, a, b, pid), delong_compare(y, a, b)
    assert r.se == pytest.approx(d.se, rel=0.10)


def test_clustered_variance_is_calibrated_over_simulated_studies():
    """Over 300 simulated studies the true SD of the AUC (known truth: labels per patient, so
    every positive-negative pair crosses patients and AUC = Phi(1 / sqrt(2 (1 + 1)))) matches the
    RMS of Obuchowski's SE, whose 95% intervals cover; DeLong's SE is about 30% too small and its
    intervals undercover. With independent images both estimators are unbiased."""
    truth = stats.norm.cdf(1.0 / math.sqrt(4.0))
    aucs, var_o, var_d, cover_o, cover_d = [], [], [], 0, 0
    var_o0, var_d0 = [], []
    for i in range(300):
        rng = np.random.default_rng(100 + i)
        y, a, _, pid = simulate_patients(rng, n_patients=150, sd_patient=1.0)
        auc, v = clustered_auc_variance(y, a, pid)
        aucs.append(auc)
        var_o.append(v)
        var_d.append(auc_variance(y, a)[1])
        _, lo, hi = clustered_auc_confidence_interval(y, a, pid)
        cover_o += lo <= truth <= hi
        _, lo, hi = auc_confidence_interval(y, a)
        cover_d += lo <= truth <= hi
        y, a, _, pid = simulate_patients(rng, n_patients=150, sd_patient=0.0)
        var_o0.append(clustered_auc_variance(y, a, pid)[1])
        var_d0.append(auc_variance(y, a)[1])
    true_sd = np.std(aucs, ddof=1)
    rms_o, rms_d = math.sqrt(np.mean(var_o)), math.sqrt(np.mean(var_d))
    # measured: true SD 0.0359, RMS SE 0.0363 (Obuchowski), 0.0253 (DeLong); coverage 0.947 and
    # 0.850; mean AUC 0.6909 for a truth of 0.6915
    assert abs(np.mean(aucs) - truth) < 0.01
    assert rms_o == pytest.approx(true_sd, rel=0.10)
    assert rms_d / true_sd < 0.8
    assert cover_o / 300 >= 0.92 and cover_d / 300 < 0.88
    # independent images: mean variances agree (measured ratio 1.011)
    assert np.mean(var_o0) == pytest.approx(np.mean(var_d0), rel=0.05)


# --- cluster bootstrap --------------------------------------------------------------------------


def test_cluster_bootstrap_is_seeded_and_deterministic():
    rng = np.random.default_rng(6)
    y, a, b, pid = simulate_patients(rng, n_patients=40)
    r1 = cluster_bootstrap(y, a, pid, fast_auc, n=300, seed=7)
    assert cluster_bootstrap(y, a, pid, fast_auc, n=300, seed=7) == r1
    assert cluster_bootstrap(y, a, pid, fast_auc, n=300, seed=np.random.default_rng(7)) == r1
    assert cluster_bootstrap(y, a, pid, fast_auc, n=300, seed=8) != r1
    assert r1.ci_low < r1.estimate < r1.ci_high and r1.n_valid + r1.n_dropped == 300
    # the generic metric: scikit-learn's own AUC gives the same numbers as the fast one
    r2 = cluster_bootstrap(y, a, pid, roc_auc_score, n=100, seed=7)
    r3 = cluster_bootstrap(y, a, pid, fast_auc, n=100, seed=7)
    assert np.array(r2) == pytest.approx(np.array(r3), rel=1e-12)
    p1 = paired_cluster_bootstrap(y, a, b, pid, fast_auc, n=300, seed=9)
    assert paired_cluster_bootstrap(y, a, b, pid, fast_auc, n=300, seed=9) == p1


def test_cluster_bootstrap_resamples_whole_patients():
    rng = np.random.default_rng(7)
    y, a, _, pid = simulate_patients(rng, n_patients=30)
    sizes = np.bincount(pid)
    seen = []

    def checking_metric(yb, sb):
        # recover the patients from the scores (all distinct): each appears a whole number of times
        order = np.argsort(a)
        counts = np.bincount(pid[order][np.searchsorted(a[order], sb)], minlength=30)
        drawn = counts // sizes
        assert np.array_equal(counts, drawn * sizes)
        seen.append(drawn.sum())
        return fast_auc(yb, sb)

    cluster_bootstrap(y, a, pid, checking_metric, n=50, seed=0)
    assert seen and set(seen) == {30}  # always 30 patients, drawn with replacement


def test_cluster_bootstrap_drops_and_counts_single_class_resamples():
    # 8 patients, positives in 2 of them: a resample misses both with probability (6/8)^8 = 0.100
    pid = np.repeat(np.arange(8), 2)
    y = np.isin(pid, [0, 1]).astype(int)
    s = np.linspace(1, 0, 16)[[0, 1, 2, 5, 4, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]  # distinct
    r = cluster_bootstrap(y, s, pid, fast_auc, n=2000, seed=0)
    assert r.n_valid + r.n_dropped == 2000
    assert abs(r.n_dropped / 2000 - 0.75**8) < 0.025
    # a metric that can be NaN (here: when the resample repeats many patients) is dropped too
    def distinct(yb, sb):
        return np.unique(sb).size

    nan_some = cluster_bootstrap(
        y, s, pid, lambda yb, sb: 1.0 if distinct(yb, sb) >= 10 else np.nan, n=200, seed=0,
        require_both_classes=False,
    )
    assert 0 < nan_some.n_dropped < 200 and nan_some.ci_low == nan_some.ci_high == 1.0
    with pytest.raises(ValueError, match="not defined on the full sample"):
        cluster_bootstrap(y, s, pid, lambda yb, sb: math.nan, n=10)
    with pytest.raises(ValueError, match="defined on 0 of 10"):  # all 8 patients drawn: p = 0.002
        cluster_bootstrap(y, s, pid, lambda yb, sb: 1.0 if distinct(yb, sb) == 16 else math.inf,
                          n=10)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        cluster_bootstrap(y, s, np.zeros(16), fast_auc)
    with pytest.raises(ValueError, match="n must be at least 1"):
        cluster_bootstrap(y, s, pid, fast_auc, n=0)


def test_cluster_bootstrap_interval_covers():
    """Coverage of the 95% percentile interval over 100 simulated studies of 60 patients (150
    resamples each): measured 0.94. Known truth as in the calibration test above."""
    truth = stats.norm.cdf(1.0 / math.sqrt(4.0))
    covered = 0
    for i in range(100):
        rng = np.random.default_rng(1000 + i)
        y, a, _, pid = simulate_patients(rng, n_patients=60)
        r = cluster_bootstrap(y, a, pid, fast_auc, n=150, seed=i)
        covered += r.ci_low <= truth <= r.ci_high
    assert 0.86 <= covered / 100 <= 1.0


def test_paired_cluster_bootstrap_p_values():
    rng = np.random.default_rng(8)
    y, a, b, pid = simulate_patients(rng, n_patients=60)
    same = paired_cluster_bootstrap(y, a, a.copy(), pid, fast_auc, n=500, seed=0)
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # a much better method: no resample reverses the order, p hits its floor 1 / (B + 1)
    strong = paired_cluster_bootstrap(y, 5 * y + a, a, pid, fast_auc, n=500, seed=0)
    assert strong.diff > 0 and strong.ci_low > 0 and strong.p_value == pytest.approx(1 / 501)
    # p below 0.05 exactly when the 95% interval excludes 0; two-sided, so symmetric in a, b
    for seed in range(3):
        r = paired_cluster_bootstrap(y, a, b, pid, fast_auc, n=400, seed=seed)
        assert (r.p_value < 0.05) == (r.ci_low > 0 or r.ci_high < 0)
        rev = paired_cluster_bootstrap(y, b, a, pid, fast_auc, n=400, seed=seed)
        assert rev.p_value == pytest.approx(r.p_value) and rev.diff == pytest.approx(-r.diff)
    with pytest.raises(ValueError, match="scores hold"):
        paired_cluster_bootstrap(y, a, b[:-1], pid, fast_auc)


# --- clustered accuracy test --------------------------------------------------------------------


def test_clustered_accuracy_test_widens_the_image_level_bootstrap():
    """Errors that come per patient (a hard patient is misread on every image): the patient
    bootstrap sees fewer independent units than the image bootstrap and gives a larger p."""
    rng = np.random.default_rng(9)
    n_patients = 120
    sizes = rng.integers(2, 5, n_patients)
    pid = np.repeat(np.arange(n_patients), sizes)
    y = (rng.random(n_patients) < 0.4).astype(int)[pid]
    hard_a = rng.random(n_patients) < 0.15
    hard_b = hard_a | (rng.random(n_patients) < 0.05)  # b fails on a's patients and some more
    a = np.where(hard_a[pid], 1 - y, y) * 0.6 + 0.2  # 0.8 when called positive, else 0.2
    b = np.where(hard_b[pid], 1 - y, y) * 0.6 + 0.2
    r = clustered_accuracy_test(y, a, b, pid, n=2000, seed=0)
    assert r.estimate_a == pytest.approx(np.mean((a >= 0.5) == y))
    assert r.estimate_b == pytest.approx(np.mean((b >= 0.5) == y))
    assert r.diff > 0 and r.n_dropped == 0 and r.ci_low <= r.diff <= r.ci_high
    p_images = paired_bootstrap_accuracy(y, a >= 0.5, b >= 0.5, n=2000, seed=0)
    # measured: accuracy 0.865 vs 0.832, p = 0.038 (patients) against 0.0010 (images)
    assert r.p_value > p_images
    # the same scores at method-specific thresholds: b at 0.9 calls nothing positive
    t = clustered_accuracy_test(y, a, b, pid, threshold=0.5, threshold_b=0.9, n=200, seed=0)
    assert t.estimate_b == pytest.approx(np.mean(y == 0))
    assert clustered_accuracy_test(y, a, a, pid, n=200).p_value == 1.0


# --- Holm (1979) --------------------------------------------------------------------------------


def test_holm_adjust_hand_computed():
    # m = 4 (the NaN is not counted). Sorted: 0.005, 0.01, 0.03, 0.04 -> times 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04 -> running max: 0.02, 0.03, 0.06, 0.06
    adj = holm_adjust([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert math.isnan(adj[4])
    # capped at 1; monotone in the sorted order
    assert holm_adjust([0.5, 0.4, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm_adjust([0.02, 0.2]) == pytest.approx([0.04, 0.2])
    assert holm_adjust([0.3]) == pytest.approx([0.3])
    assert np.isnan(holm_adjust([math.nan, math.nan])).all()
    assert holm_adjust([]).size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.2, 1.2])


# --- clinicians' metrics ------------------------------------------------------------------------

# 10 images: by descending score .9(+) .8(-) .7(+) .6(+) .5(+) .4(-) .35(+) .3(-) .2(-) .1(-)
Y10 = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
S10 = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8, 0.9, 0.5])


def test_auprc_is_average_precision():
    # by hand: recall steps of 1/2 at precision 1/1 and 2/3
    assert auprc([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    rng = np.random.default_rng(10)
    y = (rng.random(300) < 0.2).astype(int)
    s = np.round(y + rng.normal(size=300), 1)
    assert auprc(y, s) == pytest.approx(average_precision_score(y, s), rel=1e-12)
    with pytest.raises(ValueError, match="single class"):
        auprc([0, 0, 0], [0.1, 0.2, 0.3])


def test_sensitivity_at_specificity_hand_computed():
    # 5 negatives: specificity >= 0.8 allows 1 false positive -> threshold .5, TP = 4 of 5
    assert operating_point_at_specificity(Y10, S10, 0.8) == pytest.approx((0.5, 0.8, 0.8))
    # >= 0.9 and >= 0.95 allow none: only the .9 image is above every negative
    assert sensitivity_at_specificity(Y10, S10, 0.9) == pytest.approx(0.2)
    assert operating_point_at_specificity(Y10, S10, 0.95) == pytest.approx((0.9, 0.2, 1.0))
    # >= 0.6: 2 false positives, threshold .35 reaches all 5 positives
    assert operating_point_at_specificity(Y10, S10, 0.6) == pytest.approx((0.35, 1.0, 0.6))
    # ties: a negative tied with the best positive -> no threshold separates them
    assert operating_point_at_specificity([0, 1, 0], [0.9, 0.9, 0.1], 0.9) == (math.inf, 0.0, 1.0)
    # among equally sensitive points, the most specific
    assert operating_point_at_specificity([1, 0, 0, 0], [0.9, 0.5, 0.4, 0.3], 0.0)[2] == 1.0


def test_youden_threshold_hand_computed():
    # J = TPR - FPR: .9: .2-0, .8: .2-.2, .7: .4-.2, .6: .6-.2, .5: .8-.2 = .6, .4: .8-.4,
    # .35: 1-.4 = .6, ... -> tie at .5 and .35: the higher threshold, .5
    assert youden_threshold(Y10, S10) == 0.5
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8  # J = .5 at .8 and .35
    assert youden_threshold([0, 1], [0.2, 0.7]) == 0.7


def test_aggregate_scores_by_hand():
    y = np.array([0, 0, 1, 1, 0, 0, 0, 1])
    s = np.array([0.1, 0.3, 0.8, 0.4, 0.2, 0.2, 0.5, 0.6])
    patient = np.array(["A", "A", "A", "A", "B", "B", "C", "C"])
    side = np.array(["L", "L", "R", "R", "L", "L", "R", "R"])
    breast = aggregate_scores(y, s, patient, side, how="mean")
    assert breast.keys[0].tolist() == ["A", "A", "B", "C"]
    assert breast.keys[1].tolist() == ["L", "R", "L", "R"]
    assert breast.labels.tolist() == [0, 1, 0, 1]
    assert breast.scores == pytest.approx([0.2, 0.6, 0.2, 0.55])
    assert breast.sizes.tolist() == [2, 2, 2, 2]
    pat = aggregate_scores(y, s, patient, how="max")
    assert pat.keys[0].tolist() == ["A", "B", "C"]
    assert pat.labels.tolist() == [1, 0, 1] and pat.scores == pytest.approx([0.8, 0.2, 0.6])
    assert aggregate_scores(y, s, patient).scores == pytest.approx([0.4, 0.2, 0.55])
    # breast level with the patient as the cluster of the clustered tests
    assert breast.keys[0].size == breast.labels.size
    with pytest.raises(ValueError, match="how"):
        aggregate_scores(y, s, patient, how="median")
    with pytest.raises(ValueError, match="key array holds 3"):
        aggregate_scores(y, s, patient[:3])


def test_clinical_metrics_in_the_patient_bootstrap():
    rng = np.random.default_rng(12)
    y, a, b, pid = simulate_patients(rng, n_patients=60)
    sens90 = functools.partial(sensitivity_at_specificity, specificity=0.9)
    r = cluster_bootstrap(y, a, pid, sens90, n=200, seed=0)
    assert 0.0 <= r.ci_low <= r.estimate <= r.ci_high <= 1.0
    assert r.estimate == sensitivity_at_specificity(y, a, 0.9)
    p = paired_cluster_bootstrap(y, a, b, pid, auprc, n=200, seed=0)
    assert p.estimate_a == pytest.approx(average_precision_score(y, a))

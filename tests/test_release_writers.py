"""The phantom written as CBIS-DDSM and VinDr-Mammo release trees (``data synth --format dicom
--layout cbis-ddsm|vindr``) is read back by the real loaders as written: labels, patients,
laterality, view, the official split (by patient), and the pixels of the DICOM files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.data.cbis_ddsm import CBISDDSM
from ssl_bench.data.cbis_ddsm_writer import write_cbis_ddsm_tree
from ssl_bench.data.synthetic_mammo import generate
from ssl_bench.data.vindr import VinDrMammo
from ssl_bench.data.vindr_writer import write_vindr_tree

SIZE = (64, 32)


@pytest.fixture(scope="module")
def cohort():
    return generate(image_size=SIZE, n_patients=10, n_benign=16, n_malignant=8, seed=3)


@pytest.mark.parametrize(
    "writer, loader, options",
    [
        (write_cbis_ddsm_tree, CBISDDSM, {}),
        (write_vindr_tree, VinDrMammo, {}),
    ],
)
def test_tree_reads_back_as_written(tmp_path, cohort, writer, loader, options):
    table, images = cohort
    written = writer(tmp_path, images, table)
    read, problems = loader(root=str(tmp_path), image_size=SIZE, cache_dir=str(tmp_path / "cache"), **options).scan()
    assert problems == []
    columns = ["image_id", "patient_id", "label", "laterality", "view", "official_split", "path"]
    got = read[columns].sort_values("image_id").reset_index(drop=True)
    want = written[columns].sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # the writer's table is the generator's, row for row: labels, sides and views kept, one
    # written patient per generated patient
    assert written["label"].tolist() == table["label"].tolist()
    assert written["laterality"].tolist() == table["laterality"].tolist()
    assert written["view"].tolist() == table["view"].tolist()
    assert pd.crosstab(written["patient_id"], table["patient_id"]).astype(bool).sum().eq(1).all()
    assert written["patient_id"].nunique() == table["patient_id"].nunique()
    # the official split is by patient, both classes in both splits
    assert written.groupby("patient_id")["official_split"].nunique().eq(1).all()
    for split in ("train", "test"):
        assert set(written.loc[written["official_split"] == split, "label"]) == {0, 1}
    # pixels: a left breast as drawn, a right one mirrored, 16 bits
    for i in (0, int(np.flatnonzero(table["laterality"] == "R")[0])):
        stored = pydicom.dcmread(written["path"][i]).pixel_array.astype(float) / 65535
        canonical = images[i].astype(float)
        expected = canonical if table["laterality"][i] == "L" else canonical[:, ::-1]
        np.testing.assert_allclose(stored, expected, atol=1 / 65535)


@pytest.mark.parametrize("layout, dataset", [("cbis-ddsm", "cbis_ddsm"), ("vindr", "vindr_mammo")])
def test_data_synth_layout_verifies(tmp_path, layout, dataset):
    runner = CliRunner()
    out = str(tmp_path / layout)
    synth = runner.invoke(
        main,
        [
            "data",
            "synth",
            "--out",
            out,
            "--format",
            "dicom",
            "--layout",
            layout,
            "--image-size",
            "64x32",
            "--set",
            "params.synthetic.n_patients=6",
            "--set",
            "params.synthetic.n_benign=10",
            "--set",
            "params.synthetic.n_malignant=4",
        ],
    )
    assert synth.exit_code == 0, synth.output
    verify = runner.invoke(
        main,
        [
            "data",
            "verify",
            "--dataset",
            dataset,
            "--data-root",
            out,
            "--image-size",
            "64x32",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert verify.exit_code == 0, verify.output
    assert "no problems found" in verify.output
    assert "14" in verify.output and "patients" in verify.output

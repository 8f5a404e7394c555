"""Pulse-feature workbooks: real files (via SLBJAX_DATA), layouts, bad input, synthetic cohort."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from slbjax.data import pulse, pulse_synthetic
from slbjax.errors import DataError

REAL_DATA = os.environ.get("SLBJAX_DATA")


# ------------------------------------------------------------------ helpers
def write_workbook(path: Path, sheets: dict[str, list[list]]) -> Path:
    """Writes ``{sheet: rows}`` (first row = header) as an .xlsx file."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def lfp_layout_rows(n_cells: int = 4, max_soc: int = 85, width_col: str = "Pt", seed: int = 1):
    """Rows laid out like the LFP 'SOC ALL' sheet (LMO variant: pulse width 'Pt')."""
    levels = tuple(range(5, max_soc + 1, 5))
    cohort = pulse_synthetic.make_cohort(n_cells, seed, soc_levels_pct=levels)
    header = ["File_Name", "Mat", "No.", "ID", "Qn", "Q", "SOH", width_col, "SOC", "SOE"]
    header += [f"U{i}" for i in range(1, 42)]
    rows = [header]
    for i in range(cohort.num_rows):
        no = int(cohort.cell[i][3:]) + 1
        soc = round(cohort.soc[i] * 100)
        u = list(cohort.features[i]) + list(cohort.features[i, :20] + 0.01)
        rows.append(
            [
                f"LMO_C_10_B_{no}_SOC_5-{max_soc}_Part_1-1_ID_{no}号.xlsx",
                "LMO",
                no,
                f"{no}号",
                10,
                10 * cohort.soh[i],
                cohort.soh[i],
                3,
                soc,
                soc * cohort.soh[i],
                *u,
            ]
        )
    return rows, cohort


@pytest.fixture
def lmo_dir(tmp_path):
    rows, _ = lfp_layout_rows()
    write_workbook(tmp_path / "pulse" / "LMO_10Ah_W_3000.xlsx", {"SOC ALL": rows})
    return tmp_path


# --------------------------------------------------------------- real files
needs_real = pytest.mark.skipif(not REAL_DATA, reason="SLBJAX_DATA is not set")


@needs_real
@pytest.mark.realdata
@pytest.mark.parametrize(
    "battery, rows, cells, samples",
    [("NMC2.1", 670, 12, 67), ("NMC21", 520, 52, 52), ("LFP", 560, 56, 56)],
)
def test_real_workbook(battery, rows, cells, samples):
    # a missing file raises DataError here: the test fails, it does not skip
    data = pulse.load_pulse(Path(REAL_DATA), battery)
    assert data.num_rows == rows
    assert data.features.shape == (rows, 21)
    assert data.soc_levels_pct() == [float(x) for x in range(5, 55, 5)]
    assert len(set(data.cell.tolist())) == cells
    assert len(set(data.sample.tolist())) == samples
    assert np.all((data.features > 2.5) & (data.features < 4.5))
    assert np.all(data.soh > 0.6) and np.all(data.soh < 1.02)
    # every sample is measured once at every level
    for level in data.soc_levels_pct():
        at = data.soc_pct == level
        assert at.sum() == samples
        assert len(set(data.sample[at].tolist())) == samples


@needs_real
@pytest.mark.realdata
def test_real_identities():
    nmc = pulse.load_pulse(Path(REAL_DATA), "NMC2.1")
    assert set(nmc.cell.tolist()) == {
        "D3", "D4", "E3", "E4", "H3", "H4", "I3", "I4", "J1", "J2", "J3", "J4"
    }  # fmt: skip
    assert nmc.sample[0] == "D3-100"
    lfp = pulse.load_pulse(Path(REAL_DATA), "LFP")
    assert set(lfp.cell.tolist()) == {f"B_{n}" for n in range(1, 57)}


# ------------------------------------------------------------------ layouts
def test_lmo_layout_from_data_dir(lmo_dir):
    data = pulse.load_pulse(lmo_dir, "LMO")
    # 4 cells x levels 5..50 of 5..85
    assert data.num_rows == 40
    assert data.soc.max() == pytest.approx(0.50)
    assert data.sheet == "SOC ALL"
    assert set(data.cell.tolist()) == {"B_1", "B_2", "B_3", "B_4"}
    _, cohort = lfp_layout_rows()
    keep = cohort.soc <= 0.5 + 1e-9
    np.testing.assert_allclose(data.features, cohort.features[keep], rtol=0, atol=1e-12)
    np.testing.assert_allclose(data.soh, cohort.soh[keep])


def test_nmc21_layout_identity_from_idx(tmp_path):
    header = ["Idx", "Qn", "Q", "SOH", "SOC", "SOE", *[f"U{i}" for i in range(1, 42)]]
    rows = [header]
    for no in (7, 9):
        for soc in (5, 10, 60):
            name = f"NCM_C_21_B_{no}_SOC_5-90_Part_1-2_ID_X{no}.xlsx"
            rows.append([name, 21, 18.9, 0.9, soc, soc * 0.9, *np.linspace(3.5, 3.7, 41)])
    path = write_workbook(tmp_path / "nmc21.xlsx", {"SOC ALL": rows})
    data = pulse.read_pulse_workbook(path, "SOC ALL", battery="NMC21")
    assert data.num_rows == 4
    assert data.cell.tolist() == ["B_7", "B_7", "B_9", "B_9"]
    assert data.row.tolist() == [0, 1, 3, 4]


def test_nmc_2p1_identity_and_cache(tmp_path):
    header = ["Idx", "Qn", "Q", "SOH", "SOC", "SOE", *pulse.FEATURES]
    rows = [header, ["SOC-J2-300.xls", 2.1, 1.8, 0.857, 25, 21.4, *[3.6] * 21]]
    path = write_workbook(tmp_path / "a.xlsx", {"Sheet1": rows})
    first = pulse.read_pulse_workbook(path, "Sheet1")
    assert first.cell.tolist() == ["J2"] and first.sample.tolist() == ["J2-300"]
    assert pulse._read_sheet.cache_info().currsize >= 1
    # a rewritten file is read again, not served from the cache
    rows[1][4] = 30
    write_workbook(path, {"Sheet1": rows})
    os.utime(path, ns=(1, 1))
    assert pulse.read_pulse_workbook(path, "Sheet1").soc.tolist() == [0.30]


def test_rows_without_identity_are_their_own_cells(tmp_path):
    rows = [["SOH", "SOC", *pulse.FEATURES], [0.9, 5, *[3.5] * 21], [0.8, 10, *[3.6] * 21]]
    data = pulse.read_pulse_workbook(write_workbook(tmp_path / "b.xlsx", {"S": rows}), "S")
    assert data.cell.tolist() == ["row0", "row1"]
    assert data.notes and "no cell identity" in data.notes[0]


# ---------------------------------------------------------------- bad input
def _good_rows():
    rows, _ = lfp_layout_rows(n_cells=2, max_soc=20, width_col="W")
    return rows


def _corrupt(kind: str, rows: list[list]):
    header = rows[0]
    if kind == "missing_u":
        col = header.index("U7")
        return [r[:col] + r[col + 1 :] for r in rows]
    if kind == "soc_range":
        rows[3][header.index("SOC")] = 120
    elif kind == "non_numeric":
        rows[2][header.index("U5")] = "abc"
    elif kind == "empty_cell":
        rows[2][header.index("U5")] = None
    elif kind == "soh_range":
        rows[1][header.index("SOH")] = -0.5
    return rows


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing_u", ["'U7'", "is missing"]),
        ("soc_range", ["Excel row 4", "'SOC'", "outside 0-100"]),
        ("non_numeric", ["Excel row 3", "'U5'", "'abc'"]),
        ("empty_cell", ["Excel row 3", "'U5'", "empty cell"]),
        ("soh_range", ["Excel row 2", "'SOH'"]),
    ],
)
def test_bad_cells(tmp_path, kind, expected):
    write_workbook(
        tmp_path / "pulse" / "LFP_35Ah_W_3000.xlsx", {"SOC ALL": _corrupt(kind, _good_rows())}
    )
    with pytest.raises(DataError) as err:
        pulse.load_pulse(tmp_path, "LFP")
    msg = str(err.value)
    assert "LFP_35Ah_W_3000.xlsx" in msg and "'SOC ALL'" in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        pulse.load_pulse(tmp_path, "LMO")
    msg = str(err.value)
    assert "LMO_10Ah_W_3000.xlsx" in msg and "not found" in msg and "'SOC ALL'" in msg


def test_missing_data_dir():
    with pytest.raises(DataError, match="SLBJAX_DATA"):
        pulse.load_pulse(None, "NMC2.1")


def test_wrong_sheet(tmp_path):
    write_workbook(tmp_path / "pulse" / "NMC_2.1Ah_W_3000.xlsx", {"SOC5": _good_rows()})
    with pytest.raises(DataError) as err:
        pulse.load_pulse(tmp_path, "NMC2.1")
    msg = str(err.value)
    assert "NMC_2.1Ah_W_3000.xlsx" in msg and "'Sheet1' not found" in msg and "'SOC5'" in msg


@pytest.mark.parametrize(
    "content, expected", [([], "is empty"), ([["SOC", "SOH", *pulse.FEATURES]], "no data rows")]
)
def test_empty_workbook(tmp_path, content, expected):
    write_workbook(tmp_path / "pulse" / "LFP_35Ah_W_3000.xlsx", {"SOC ALL": content})
    with pytest.raises(DataError) as err:
        pulse.load_pulse(tmp_path, "LFP")
    msg = str(err.value)
    assert "LFP_35Ah_W_3000.xlsx" in msg and "'SOC ALL'" in msg and expected in msg


def test_not_a_workbook(tmp_path):
    path = tmp_path / "pulse" / "LFP_35Ah_W_3000.xlsx"
    path.parent.mkdir()
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot be read as an .xlsx workbook"):
        pulse.load_pulse(tmp_path, "LFP")


def test_soc_as_fraction_is_refused(tmp_path):
    rows = [["SOC", "SOH", *pulse.FEATURES], [0.05, 0.9, *[3.5] * 21], [0.1, 0.9, *[3.6] * 21]]
    path = write_workbook(tmp_path / "c.xlsx", {"S": rows})
    with pytest.raises(DataError, match="percent"):
        pulse.read_pulse_workbook(path, "S")


def test_unknown_battery(tmp_path):
    with pytest.raises(DataError, match="unknown battery type"):
        pulse.load_pulse(tmp_path, "NCA")


# ---------------------------------------------------------------- synthetic
def test_synthetic_cohort_is_deterministic_and_physical():
    a = pulse_synthetic.make_cohort(10, seed=3)
    b = pulse_synthetic.make_cohort(10, seed=3)
    c = pulse_synthetic.make_cohort(10, seed=4)
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.allclose(a.features, c.features)
    assert a.num_rows == 100 and a.features.shape == (100, 21)
    assert a.soc_levels_pct() == [float(x) for x in range(5, 55, 5)]
    assert len(set(a.cell.tolist())) == 10
    u = pulse_synthetic.make_cohort(10, seed=3, noise_v=0.0).features
    # charging pulse raises the voltage, discharging lowers it; relaxation after each
    assert np.all(u[:, 1] > u[:, 0]) and np.all(u[:, 2] > u[:, 1])
    assert np.all(u[:, 5] < u[:, 4]) and np.all(u[:, 6] < u[:, 5])
    assert np.all(u[:, 17] - u[:, 0] > u[:, 9] - u[:, 0])  # 1.5C step above 1C step
    # a more aged cell has the larger ohmic step at the same SOC
    clean = pulse_synthetic.make_cohort(10, seed=3, noise_v=0.0)
    at = clean.soc_pct == 25.0
    step = clean.features[at, 1] - clean.features[at, 0]
    soh = clean.soh[at]
    assert np.corrcoef(step, soh)[0, 1] < -0.8

"""Tests of the iMOE file layer: loaders, quirks, validity, cache, splits, windows."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import pytest

from slbjax.data import imoe_files
from slbjax.data.imoe_files import (
    SPLITS,
    SplitCells,
    find_cell_files,
    load_cell_file,
    load_split,
    qv_outlier_rows,
    split_files,
    ul_conditions_from_name,
)
from slbjax.data.windows import build_windows, window_starts
from slbjax.errors import DataError

UL_HEADER = [
    "Cycle",
    "Charge_Current",
    "Discharge_Current",
    "Temperature",
    "Capacity_Increment",
    "Relaxation_Voltage",
    "Discharge_Capacity",
]
TPSL_HEADER = [
    "Cycle_Index",
    "QV_Curve",
    "Charge_Current(A)",
    "Temperture",
    "Discharge_Current(A)",
    "Max_Charge_Capacity(Ah)",
    "Max_Discharge_Capacity(Ah)",
]


def _list(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def ul_rows(n: int = 4, charge: float = 0.5) -> list[dict]:
    """n valid UL rows (mAh) with linear Q-V curves."""
    return [
        {
            "Cycle": i + 2,
            "Charge_Current": charge,
            "Discharge_Current": 1,
            "Temperature": 25,
            "Capacity_Increment": _list(np.arange(50) * (40.0 - i)),
            "Relaxation_Voltage": _list([4.19, 4.18, 4.17, 4.16 - 0.001 * i]),
            "Discharge_Capacity": 3300.0 - 10 * i,
        }
        for i in range(n)
    ]


def lsd_rows(n: int = 4) -> list[dict]:
    """n valid LSD rows (Ah, grid 3.8..4.1 V)."""
    rows = ul_rows(n)
    for r in rows:
        r["Discharge_Capacity"] /= 1000.0
        r["Capacity_Increment"] = _list(np.linspace(0, 1.0, 50))
        r["Start_Voltage"], r["End_Voltage"] = 3.8, 4.1
    return rows


def write_csv(path: Path, header: list[str], rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([r[h] for h in header])
    return path


@pytest.fixture
def ul_file(tmp_path) -> Path:
    return write_csv(tmp_path / "CY25-05_1-#1.csv", UL_HEADER, ul_rows())


# --------------------------------------------------------------------------- #
# Fixture files: formats and quirks
# --------------------------------------------------------------------------- #


def test_ul_fixture_loads_in_ah(ul_file):
    cell = load_cell_file(ul_file, cache=False)
    assert cell.dataset == "UL" and cell.name == "CY25-05_1-#1"
    assert cell.qv.shape == (4, 50) and cell.qv.dtype == np.float64
    np.testing.assert_allclose(cell.qv[0, :3], [0.0, 0.04, 0.08])
    np.testing.assert_allclose(cell.capacity_ah, [3.3, 3.29, 3.28, 3.27])
    np.testing.assert_allclose(cell.voltage_grid, np.linspace(3.6, 4.15, 50))
    np.testing.assert_array_equal(cell.cycle, [2, 3, 4, 5])
    assert len(cell.relaxation) == 4 and cell.relaxation[0].dtype == np.float64
    assert cell.valid.all()
    assert cell.load.shape == (4, 3)


@pytest.mark.parametrize(
    ("name", "column", "expected"),
    [
        ("CY25-025_1-#1.csv", 2.5, 0.25),
        ("CY25-1_1-#3.csv", 0.1, 1.0),
        ("CY45-05_1-#2.csv", 0.5, 0.5),
    ],
)
def test_ul_rate_from_file_name(tmp_path, name, column, expected):
    path = write_csv(tmp_path / name, UL_HEADER, ul_rows(charge=column))
    cell = load_cell_file(path, cache=False)
    np.testing.assert_allclose(cell.charge_current, expected)
    noted = any("Charge_Current column holds" in n for n in cell.notes)
    assert noted == (column != expected)


def test_ul_rate_code_rule():
    assert ul_conditions_from_name("CY25-025_1-#1.csv") == (25.0, 0.25, 1.0)
    assert ul_conditions_from_name("CY35-05_4-#2.csv") == (35.0, 0.5, 4.0)
    assert ul_conditions_from_name("CY25-1_1-#9.csv") == (25.0, 1.0, 1.0)
    assert ul_conditions_from_name("CY25-2_1-#9.csv") == (25.0, 2.0, 1.0)
    assert ul_conditions_from_name("cell_7.csv") is None


def test_ul_other_name_keeps_columns(tmp_path):
    path = write_csv(tmp_path / "my_cell.csv", UL_HEADER, ul_rows(charge=2.5))
    cell = load_cell_file(path, cache=False)
    np.testing.assert_allclose(cell.charge_current, 2.5)
    assert any("does not follow" in n for n in cell.notes)


def test_lsd_fixture_true_grid(tmp_path):
    rows = lsd_rows()
    for r in rows:
        r["Discharge_Capacity"] = 1.9
    path = write_csv(tmp_path / "LSD" / "5.csv", UL_HEADER + ["Start_Voltage", "End_Voltage"], rows)
    cell = load_cell_file(path, cache=False)
    assert cell.dataset == "LSD" and cell.name == "LSD-5"
    np.testing.assert_allclose(cell.voltage_grid, np.linspace(3.8, 4.1, 50))
    np.testing.assert_allclose(cell.capacity_ah, 1.9)  # already Ah
    assert any("3.6..4.1" in n for n in cell.notes)


def test_lsd_grid_must_be_constant(tmp_path):
    rows = lsd_rows()
    rows[2]["End_Voltage"] = 4.2
    path = write_csv(tmp_path / "7.csv", UL_HEADER + ["Start_Voltage", "End_Voltage"], rows)
    with pytest.raises(DataError) as e:
        load_cell_file(path, cache=False)
    assert e.value.row == 2 and e.value.field == "End_Voltage"


def tpsl_rows(n: int = 3) -> list[dict]:
    return [
        {
            "Cycle_Index": i + 2,
            "QV_Curve": _list(0.1 + np.linspace(0, 2.0, 50) - 0.01 * i),
            "Charge_Current(A)": 1.2,
            "Temperture": 25,
            "Discharge_Current(A)": -2.4,
            "Max_Charge_Capacity(Ah)": 2.36,
            "Max_Discharge_Capacity(Ah)": 2.35 - 0.01 * i,
        }
        for i in range(n)
    ]


def test_tpsl_sign_and_rebasing(tmp_path):
    path = write_csv(tmp_path / "TPSL-Fixed" / "#6" / "combined_data.csv", TPSL_HEADER, tpsl_rows())
    cell = load_cell_file(path, cache=False)
    assert cell.dataset == "TPSL" and cell.name == "TPSL-Fixed-#6"
    assert cell.relaxation is None
    np.testing.assert_array_equal(cell.qv[:, 0], 0.0)
    np.testing.assert_allclose(cell.qv[:, -1], 2.0)
    np.testing.assert_allclose(cell.discharge_current, 2.4)
    np.testing.assert_allclose(cell.charge_current, 1.2)
    np.testing.assert_allclose(cell.capacity_ah, [2.35, 2.34, 2.33])
    np.testing.assert_allclose(cell.voltage_grid, np.linspace(3.6, 4.15, 50))


def test_forced_dataset_checks_header(ul_file):
    with pytest.raises(DataError, match="TPSL format: missing column"):
        load_cell_file(ul_file, "TPSL", cache=False)
    assert load_cell_file(ul_file, "UL", cache=False).dataset == "UL"


# --------------------------------------------------------------------------- #
# Validity
# --------------------------------------------------------------------------- #


def test_qv_outlier_rule_flags_spike_not_period():
    rng = np.random.default_rng(0)
    smooth = 1.8 - 0.001 * np.arange(60) + rng.normal(0, 0.002, 60)
    spike = smooth.copy()
    spike[30] *= 1.5
    assert np.nonzero(qv_outlier_rows(spike))[0].tolist() == [30]
    periodic = smooth.copy()
    periodic[1::5] *= 2.0  # LSD-like: every 5th row much larger, but consistently
    assert not qv_outlier_rows(periodic).any()
    assert not qv_outlier_rows(np.array([1.0])).any()


def test_validity_and_monotone_fix(tmp_path):
    rows = ul_rows(12)
    rows[5]["Capacity_Increment"] = _list(np.arange(50) * 40.0 * 1.6)  # Q-V spike
    rows[7]["Relaxation_Voltage"] = "[5.506171]"  # LSD 85.csv-like artefact
    rows[9]["Relaxation_Voltage"] = "[4.19, 4.18]"  # too few points
    dec = np.arange(50) * 38.0
    dec[20] -= 50.0
    rows[3]["Capacity_Increment"] = _list(dec)
    path = write_csv(tmp_path / "CY45-05_1-#15.csv", UL_HEADER, rows)
    cell = load_cell_file(path, cache=False)
    assert np.nonzero(~cell.valid)[0].tolist() == [5, 7, 9]
    assert cell.num_cycles == 12  # rows are kept
    assert (np.diff(cell.qv, axis=1) >= 0).all()
    assert any("decreasing in row(s) 3" in n for n in cell.notes)


# --------------------------------------------------------------------------- #
# Bad inputs -> DataError naming file, row and field
# --------------------------------------------------------------------------- #


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.csv.*not found"):
        load_cell_file(tmp_path / "nothere.csv")


def test_empty_file(tmp_path):
    path = tmp_path / "CY25-05_1-#1.csv"
    path.write_text("")
    with pytest.raises(DataError, match="CY25-05_1-#1.csv.*empty"):
        load_cell_file(path, cache=False)


def test_header_only(tmp_path):
    path = write_csv(tmp_path / "x.csv", UL_HEADER, [])
    with pytest.raises(DataError, match="x.csv.*no data rows"):
        load_cell_file(path, cache=False)


def test_renamed_column_lists_missing_per_format(tmp_path):
    rows = ul_rows()
    for r in rows:
        r["Capacity"] = r.pop("Discharge_Capacity")
    header = [h if h != "Discharge_Capacity" else "Capacity" for h in UL_HEADER]
    path = write_csv(tmp_path / "CY25-05_1-#1.csv", header, rows)
    with pytest.raises(DataError) as e:
        load_cell_file(path, cache=False)
    msg = str(e.value)
    assert "CY25-05_1-#1.csv" in msg and "unknown header" in msg
    assert "UL lacks Discharge_Capacity" in msg
    assert "LSD lacks Discharge_Capacity, Start_Voltage, End_Voltage" in msg
    assert "TPSL lacks Cycle_Index" in msg


BAD_CASES = [
    ("Temperature", "abc", "expected a number, got 'abc'"),
    ("Discharge_Capacity", "nan", "expected a finite number"),
    ("Charge_Current", "inf", "expected a finite number"),
    ("Discharge_Capacity", "", "expected a number, got ''"),
    ("Cycle", "3.5", "expected an integer"),
    ("Capacity_Increment", _list(np.arange(49)), "49 values, expected exactly 50"),
    ("Capacity_Increment", "[]", "empty list, expected 50 values"),
    ("Capacity_Increment", "[1.0, x, " + ", ".join(["2.0"] * 48) + "]", "value 2 .*'x'"),
    ("Capacity_Increment", "[0.0, foo, 2.0]", "value 2 of the list is 'foo'"),  # named, not "3 values"
    ("Capacity_Increment", "[nan, " + ", ".join(["2.0"] * 49) + "]", "value 1 .*finite"),
    ("Relaxation_Voltage", "[4.1, inf, 4.0]", "value 2 .*finite"),
    ("Relaxation_Voltage", "[]", "empty list"),
    ("Relaxation_Voltage", "4.1; 4.0", "bracketed list"),
]


@pytest.mark.parametrize(("field", "value", "problem"), BAD_CASES)
def test_bad_value_names_file_row_field(tmp_path, field, value, problem):
    rows = ul_rows()
    rows[2][field] = value
    path = write_csv(tmp_path / "CY25-05_1-#4.csv", UL_HEADER, rows)
    with pytest.raises(DataError, match=problem) as e:
        load_cell_file(path, cache=False)
    msg = str(e.value)
    # data row 2 is line 4 of the file and records cycle 4 (the cycle itself when it is the bad field)
    where = "line 4, " if field == "Cycle" else "line 4 (cycle 4), "
    assert "CY25-05_1-#4.csv" in msg and where in msg and repr(field) in msg
    assert (e.value.row, e.value.field) == (2, field)


def test_bad_value_tpsl(tmp_path):
    rows = tpsl_rows()
    rows[1]["QV_Curve"] = _list(np.arange(51))
    path = write_csv(tmp_path / "#1" / "combined_data.csv", TPSL_HEADER, rows)
    with pytest.raises(DataError, match=r"line 3 \(cycle 3\), field 'QV_Curve'.*51 values"):
        load_cell_file(path, cache=False)


def test_ragged_csv_row(tmp_path, ul_file):
    text = ul_file.read_text().splitlines()
    text[2] += ",extra"
    ul_file.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match="line 3.*not a valid CSV") as e:
        load_cell_file(ul_file, cache=False)
    assert e.value.row == 1


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_cell_file(tmp_path, cache=False)


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #


def _same(a, b) -> bool:
    return (
        a.name == b.name
        and a.notes == b.notes
        and all(
            np.array_equal(getattr(a, f), getattr(b, f))
            for f in ("cycle", "qv", "voltage_grid", "capacity_ah", "valid", "charge_current")
        )
        and len(a.relaxation) == len(b.relaxation)
        and all(np.array_equal(x, y) for x, y in zip(a.relaxation, b.relaxation, strict=True))
    )


def test_cache_roundtrip_and_corrupt_entry(tmp_path, ul_file):
    cache = tmp_path / "cache"
    first = load_cell_file(ul_file, cache=cache)
    entries = list((cache / "cells").glob("*.npz"))
    assert len(entries) == 1
    second = load_cell_file(ul_file, cache=cache)
    assert _same(first, second)
    entries[0].write_bytes(b"not a zip file")
    third = load_cell_file(ul_file, cache=cache)
    assert _same(first, third)
    assert load_cell_file(ul_file, cache=cache).name == first.name  # rebuilt entry is readable
    assert _same(load_cell_file(ul_file, "UL", cache=cache), first)  # same entry, forced format
    with pytest.raises(DataError, match="TPSL format"):
        load_cell_file(ul_file, "TPSL", cache=cache)  # a cached UL cell is not returned as TPSL


def test_cache_invalidated_when_file_changes(tmp_path, ul_file):
    cache = tmp_path / "cache"
    assert load_cell_file(ul_file, cache=cache).num_cycles == 4
    write_csv(ul_file, UL_HEADER, ul_rows(6))
    st = ul_file.stat()
    os.utime(ul_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_cell_file(ul_file, cache=cache).num_cycles == 6


def test_cache_env_variable(tmp_path, ul_file, monkeypatch):
    monkeypatch.setenv("SLBJAX_CACHE", str(tmp_path / "envcache"))
    assert imoe_files.default_cache_dir() == tmp_path / "envcache"
    load_cell_file(ul_file)
    assert list((tmp_path / "envcache" / "cells").glob("*.npz"))


def test_tpsl_cache_roundtrip(tmp_path):
    path = write_csv(tmp_path / "#6" / "combined_data.csv", TPSL_HEADER, tpsl_rows())
    a = load_cell_file(path, cache=tmp_path / "c")
    b = load_cell_file(path, cache=tmp_path / "c")
    assert b.relaxation is None and np.array_equal(a.qv, b.qv) and a.notes == b.notes


# --------------------------------------------------------------------------- #
# Splits and file discovery
# --------------------------------------------------------------------------- #


def test_split_files_tables():
    s = split_files("UL", "NCA", "CY45-05_1")
    assert s["train"] == [f"imoe/UL-NCA/CY45-05_1-#{i}.csv" for i in range(1, 18)]
    assert s["val"] == ["imoe/UL-NCA/CY45-05_1-#28.csv", "imoe/UL-NCA/CY45-05_1-#25.csv"]
    assert [p.split("#")[1] for p in s["test"]] == [
        "24.csv",
        "26.csv",
        "27.csv",
        "22.csv",
        "23.csv",
    ]
    lsd = split_files("LSD")
    assert [len(lsd[r]) for r in ("train", "val", "test")] == [57, 12, 17]
    assert len(set(sum(lsd.values(), []))) == 86 and "imoe/LSD/61.csv" not in lsd["train"]
    assert split_files("TPSL", "Fixed")["train"][0] == "imoe/TPSL-Fixed/#6/combined_data.csv"
    tpsl_a = split_files("TPSL", "Arbitrary")
    assert [len(tpsl_a[r]) for r in ("train", "val", "test")] == [38, 2, 13]
    ncm = split_files("UL", "NCM", "CY25-05_1")
    assert ncm["val"] == ["imoe/UL-NCM/CY25-05_1-#5.csv", "imoe/UL-NCM/CY25-05_1-#17.csv"]
    assert len(ncm["test"]) == 6 and ncm["test"][-1].endswith("#23.csv")
    assert split_files("UL", "NCM", "CY45-05_1")["val"][1].endswith("CY45-05_1-#17.csv")
    assert split_files("UL", "NCM", "CY35-05_1")["test"][1].endswith("CY35-05_1-#4.csv")
    for cond in ("CY25-05_1", "CY25-05_2", "CY25-05_4"):
        s = split_files("UL", "NCMNCA", cond)
        assert s == {
            r: [f"imoe/UL-NCMNCA/{cond}-#{i}.csv"]
            for r, i in zip(("train", "val", "test"), (1, 2, 3), strict=True)
        }
    assert set(SPLITS["UL"]["NCA"]) == {
        "CY45-05_1",
        "CY25-05_1",
        "CY25-025_1",
        "CY25-1_1",
        "CY35-05_1",
    }


def test_split_roles_are_disjoint():
    for ds, subsets in SPLITS.items():
        for sub, conds in subsets.items():
            for cond in conds:
                s = split_files(ds, sub, cond)
                flat = sum(s.values(), [])
                assert len(flat) == len(set(flat)), (ds, sub, cond)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("UL", "NCX", "CY25-05_1"), "valid subsets: NCA, NCM, NCMNCA"),
        (("UL", "NCA", "CY99-05_1"), "valid conditions: CY45-05_1, CY25-05_1"),
        (("TPSL", "Random", None), "valid subsets: Fixed, Arbitrary"),
        (("XYZ", None, None), "valid datasets: UL, LSD, TPSL"),
    ],
)
def test_split_unknown_names(args, problem):
    with pytest.raises(DataError, match=problem):
        split_files(*args)


def test_load_split_missing_policy(tmp_path):
    root = tmp_path / "data"
    for rel in split_files("UL", "NCMNCA", "CY25-05_2")["train"]:
        write_csv(root / rel, UL_HEADER, ul_rows())
    with pytest.raises(DataError) as e:
        load_split(root, "UL", "NCMNCA", "CY25-05_2", cache=False)
    msg = str(e.value)
    assert str(root) in msg and "CY25-05_2-#2.csv" in msg and "CY25-05_2-#3.csv" in msg
    assert "CY25-05_2-#1.csv" not in msg

    write_csv(root / "imoe/TPSL-Fixed/#6/combined_data.csv", TPSL_HEADER, tpsl_rows())
    s = load_split(root, "TPSL", "Fixed", cache=False)
    assert isinstance(s, SplitCells)
    assert [c.name for c in s["train"]] == ["TPSL-Fixed-#6"] and s.val == [] and s.test == []
    assert len(s.missing) == 16 and "imoe/TPSL-Fixed/#23/combined_data.csv" in s.missing

    with pytest.raises(DataError, match="data folder not found"):
        load_split(tmp_path / "nowhere", "LSD")


def test_find_cell_files(tmp_path, ul_file):
    assert find_cell_files(ul_file) == [ul_file]
    for n in (10, 2, 1):
        write_csv(tmp_path / "sub" / f"{n}.csv", UL_HEADER, ul_rows())
    found = find_cell_files(tmp_path)
    assert [p.name for p in found] == ["CY25-05_1-#1.csv", "1.csv", "2.csv", "10.csv"]
    with pytest.raises(DataError, match="not found"):
        find_cell_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .csv files"):
        find_cell_files(tmp_path / "empty")


# --------------------------------------------------------------------------- #
# Windows on fixtures
# --------------------------------------------------------------------------- #


def test_window_starts_follow_reference():
    np.testing.assert_array_equal(window_starts(10, 4), [0, 1, 2, 3, 4, 5])  # 0..N-L-1
    np.testing.assert_array_equal(window_starts(10, 4, skip_first=1), [1, 2, 3, 4, 5, 6])
    assert window_starts(4, 4).size == 0 and window_starts(3, 4).size == 0


def test_windows_content_and_too_short(tmp_path):
    long_rows = ul_rows(12)
    long_rows[4]["Relaxation_Voltage"] = "[4.19]"  # invalid start row
    long_cell = load_cell_file(
        write_csv(tmp_path / "CY25-05_1-#1.csv", UL_HEADER, long_rows), cache=False
    )
    short_cell = load_cell_file(
        write_csv(tmp_path / "CY25-05_1-#2.csv", UL_HEADER, ul_rows(5)), cache=False
    )
    w = build_windows([long_cell, short_cell], horizon=5, soc_start=30)
    assert w.report["CY25-05_1-#1"] == {
        "rows": 12,
        "starts": 7,
        "skipped_invalid": 1,
        "windows": 6,
        "too_short": False,
    }
    assert w.report["CY25-05_1-#2"]["too_short"] and w.report["CY25-05_1-#2"]["windows"] == 0
    assert w.too_short == ["CY25-05_1-#2"]
    assert len(w) == 6 and w.start_row.tolist() == [0, 1, 2, 3, 5, 6]
    assert w.qv.shape == (6, 50) and w.qv.dtype == np.float32
    assert w.features.shape == (6, 12) and w.features.dtype == np.float32
    assert w.load.shape == (6, 5, 3) and w.target.shape == (6, 5)
    assert w.cell_index.dtype == np.int32 and (w.cell_index == 0).all()
    np.testing.assert_array_equal(w.start_cycle, long_cell.cycle[w.start_row])
    np.testing.assert_allclose(w.target[4], long_cell.capacity_ah[5:10], rtol=1e-6)
    np.testing.assert_allclose(w.load[4, :, 2], 25.0)
    np.testing.assert_array_equal(w.qv[:, :10], 0.0)  # soc 30 drops 10 points
    capped = build_windows(
        [long_cell], horizon=5, soc_start=20, max_windows_per_cell=2, skip_first=1
    )
    assert capped.start_row.tolist() == [1, 2]
    empty = build_windows([short_cell], horizon=5, soc_start=20)
    assert empty.qv.shape == (0, 50) and empty.load.shape == (0, 5, 3)


# --------------------------------------------------------------------------- #
# Real data ($SLBJAX_DATA)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slbjax_cache")


@pytest.fixture(scope="session")
def all_cells(data_dir, real_cache) -> dict[str, object]:
    files = find_cell_files(data_dir / "imoe")
    return {str(p.relative_to(data_dir)): load_cell_file(p, cache=real_cache) for p in files}


@pytest.mark.realdata
def test_every_real_file_loads(all_cells, data_dir, real_cache):
    assert len(all_cells) == 154
    counts = {}
    for rel, cell in all_cells.items():
        counts[cell.dataset] = counts.get(cell.dataset, 0) + 1
        assert cell.qv.shape == (cell.num_cycles, 50), rel
        assert (cell.qv[:, 0] == 0).all() and (np.diff(cell.qv, axis=1) >= 0).all(), rel
        assert (cell.capacity_ah > 0.1).all() and (cell.capacity_ah < 4).all(), rel
        assert (cell.discharge_current > 0).all(), rel
    assert counts == {"UL": 66, "LSD": 86, "TPSL": 2}
    assert sum(c.num_cycles for c in all_cells.values()) == 22304 + 40495 + 118 + 118
    # warm load (cache filled by the fixture) is fast and identical
    t0 = time.perf_counter()
    warm = {rel: load_cell_file(data_dir / rel, cache=real_cache) for rel in all_cells}
    assert time.perf_counter() - t0 < 10
    rel = "imoe/LSD/85.csv"
    assert _same(warm[rel], all_cells[rel])


@pytest.mark.realdata
def test_real_quirks(all_cells):
    ul = all_cells["imoe/UL-NCA/CY25-025_1-#1.csv"]
    np.testing.assert_allclose(ul.charge_current, 0.25)
    assert 3.2 < ul.capacity_ah[0] < 3.3  # mAh -> Ah
    np.testing.assert_allclose(all_cells["imoe/UL-NCA/CY25-1_1-#1.csv"].charge_current, 1.0)
    lsd = all_cells["imoe/LSD/1.csv"]
    np.testing.assert_allclose(lsd.voltage_grid[[0, -1]], [3.8, 4.1])
    for rel in ("imoe/TPSL-Fixed/#6/combined_data.csv", "imoe/TPSL-Arbitrary/#1/combined_data.csv"):
        tp = all_cells[rel]
        assert tp.relaxation is None and tp.num_cycles == 118
        assert (tp.discharge_current > 0).all() and (tp.qv[:, 0] == 0).all()
    np.testing.assert_allclose(
        all_cells["imoe/TPSL-Fixed/#6/combined_data.csv"].capacity_ah[[0, 19, 117]],
        [2.346, 1.512, 0.269],
    )


@pytest.mark.realdata
def test_real_invalid_rows(all_cells):
    invalid = {
        rel: np.nonzero(~c.valid)[0].tolist() for rel, c in all_cells.items() if not c.valid.all()
    }
    # the two rows named in the README ...
    c15 = all_cells["imoe/UL-NCA/CY45-05_1-#15.csv"]
    assert invalid["imoe/UL-NCA/CY45-05_1-#15.csv"] == [218] and c15.cycle[218] == 220
    c85 = all_cells["imoe/LSD/85.csv"]
    assert invalid["imoe/LSD/85.csv"] == [508] and c85.cycle[508] == 509
    # ... and the other rows the rules catch (truncated / late-starting UL Q-V
    # curves near cycle 202, two isolated LSD spikes).  Nothing in TPSL.
    assert invalid == {
        "imoe/UL-NCA/CY45-05_1-#15.csv": [218],
        "imoe/UL-NCA/CY45-05_1-#16.csv": [202],
        "imoe/UL-NCA/CY45-05_1-#20.csv": [200],
        "imoe/UL-NCA/CY45-05_1-#24.csv": [200],
        "imoe/UL-NCA/CY45-05_1-#26.csv": [200],
        "imoe/LSD/17.csv": [81],
        "imoe/LSD/81.csv": [391],
        "imoe/LSD/85.csv": [508],
    }
    for rel in ("imoe/LSD/18.csv", "imoe/LSD/24.csv", "imoe/LSD/71.csv"):
        assert any("decreasing" in n for n in all_cells[rel].notes), rel


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("dataset", "subset", "condition", "horizon", "skip", "reference", "expected"),
    [
        # reference = the README's count; expected = after dropping invalid starts
        ("UL", "NCA", "CY45-05_1", 50, 0, 3094, 3092),  # #24 row 200, #26 row 200
        ("UL", "NCA", "CY25-05_1", 50, 0, 730, 730),
        ("UL", "NCA", "CY25-025_1", 50, 0, 729, 729),
        ("UL", "NCA", "CY25-1_1", 10, 0, 58, 58),
        ("LSD", None, None, 50, 1, 8252, 8251),  # 85.csv row 508
    ],
)
def test_real_test_window_counts(
    data_dir, real_cache, all_cells, dataset, subset, condition, horizon, skip, reference, expected
):
    split = load_split(data_dir, dataset, subset, condition, cache=real_cache)
    w = build_windows(split.test, horizon, soc_start=20, skip_first=skip)
    assert sum(r["starts"] for r in w.report.values()) == reference
    assert len(w) == expected
    assert np.isfinite(w.features).all() and np.isfinite(w.target).all()


@pytest.mark.realdata
def test_real_short_cells_reported(data_dir, real_cache, all_cells):
    split = load_split(data_dir, "UL", "NCA", "CY35-05_1", cache=real_cache)
    w = build_windows(split.test, 50, soc_start=20)
    assert len(w) == 0 and w.too_short == ["CY35-05_1-#3"]
    assert w.report["CY35-05_1-#3"]["rows"] == 29
    w1 = build_windows(
        load_split(data_dir, "UL", "NCA", "CY25-1_1", cache=real_cache).train, 50, 20
    )
    assert len(w1.too_short) == 5


@pytest.mark.realdata
def test_real_tpsl_split(data_dir, real_cache, all_cells):
    for sub, n_missing in (("Fixed", 16), ("Arbitrary", 52)):
        s = load_split(data_dir, "TPSL", sub, cache=real_cache)
        assert len(s.train) == 1 and not s.val and not s.test and len(s.missing) == n_missing
        w = build_windows(s.train, 50, soc_start=20, max_windows_per_cell=19)
        assert w.start_row.tolist() == list(range(19)) and w.features.shape == (19, 6)

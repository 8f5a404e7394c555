"""Bad input, case by case: each gives one clear ``error:`` line or a warning, and no user file changes.

Every case builds its input in ``tmp_path`` (a corrupted cell file, a
workbook, a sorting table, an override, a run folder), runs it the way a
user would (a loader, or the command line), and sorts the outcome into
error (a :class:`SlbjaxError` of one line, or ``error: ...`` as the last
line of stderr with exit code 2), warning, traceback (any other exception)
or silent (accepted without a word).  A case passes when its outcome is the
expected one, its text matches, and every file that was in ``tmp_path``
before is still there, byte for byte.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_imoe_data import TPSL_HEADER, UL_HEADER, _list, lsd_rows, tpsl_rows, ul_rows, write_csv
from test_pulse_data import write_workbook

from slbjax.cli import main
from slbjax.data import pulse, sorting
from slbjax.data.imoe_files import load_cell_file
from slbjax.errors import SlbjaxError

LSD_HEADER = UL_HEADER + ["Start_Voltage", "End_Voltage"]
TINY = ["imoe-synthetic", "--smoke", "--set", "train.epochs=1", "--set", "data.synthetic_cells=10"]


@dataclass(frozen=True)
class Case:
    id: str
    outcome: str  # "error" or "warning"
    pattern: str  # regex the error line or a warning must match
    build: Callable[[Path], Callable[[], object] | list[str]]  # -> loader call or CLI argv


CASES: list[Case] = []


def case(id: str, outcome: str, pattern: str):
    def register(build):
        CASES.append(Case(id, outcome, pattern, build))
        return build

    return register


# ------------------------------------------------------------------ cell-file builders
def ul_file(tmp: Path, rows: list[dict] | None = None, name: str = "CY25-05_1-#4.csv",
            header: list[str] = UL_HEADER) -> Path:
    return write_csv(tmp / "cells" / name, header, ul_rows(6) if rows is None else rows)


def loads(path: Path, dataset: str | None = None) -> Callable[[], object]:
    return lambda: load_cell_file(path, dataset, cache=False)


def ul_with(field: str, value, row: int = 2, n: int = 6) -> Callable[[Path], Callable]:
    def build(tmp: Path):
        rows = ul_rows(n)
        rows[row][field] = value
        return loads(ul_file(tmp, rows))

    return build


def ul_all(field: str, fn) -> Callable[[Path], Callable]:
    def build(tmp: Path):
        rows = ul_rows(6)
        for i, r in enumerate(rows):
            r[field] = fn(r[field], i)
        return loads(ul_file(tmp, rows))

    return build


def lsd_with(field: str, value, row: int | None = 2) -> Callable[[Path], Callable]:
    def build(tmp: Path):
        rows = lsd_rows(6)
        for i, r in enumerate(rows):
            if row is None or i == row:
                r[field] = value(r[field], i) if callable(value) else value
        return loads(write_csv(tmp / "cells" / "LSD" / "5.csv", LSD_HEADER, rows))

    return build


def tpsl_with(field: str, value, row: int | None = 1) -> Callable[[Path], Callable]:
    def build(tmp: Path):
        rows = tpsl_rows(6)
        for i, r in enumerate(rows):
            if row is None or i == row:
                r[field] = value(r[field], i) if callable(value) else value
        return loads(write_csv(tmp / "cells" / "TPSL-Fixed" / "#6" / "combined_data.csv",
                               TPSL_HEADER, rows))

    return build


LINE4 = r"line 4 \(cycle 4\), field "  # data row 2 of ul_rows() is line 4 and records cycle 4

# UL: a non-number, an empty cell, NaN and inf in every scalar column
SCALARS = ("Charge_Current", "Discharge_Current", "Temperature", "Discharge_Capacity")
for _field in ("Cycle", *SCALARS):
    _where = "line 4, field " if _field == "Cycle" else LINE4
    _kind = "an integer" if _field == "Cycle" else "a number"
    case(f"ul-{_field}-text", "error", f"{_where}'{_field}'.*expected {_kind}, got 'abc'")(
        ul_with(_field, "abc"))
    case(f"ul-{_field}-empty", "error", f"{_where}'{_field}'.*expected {_kind}, got ''")(
        ul_with(_field, ""))
    case(f"ul-{_field}-nan", "error", f"{_where}'{_field}'.*finite")(ul_with(_field, "nan"))
    case(f"ul-{_field}-inf", "error", f"{_where}'{_field}'.*finite")(ul_with(_field, "inf"))
    case(f"ul-{_field}-neg-inf", "error", f"{_where}'{_field}'.*finite")(ul_with(_field, "-inf"))
case("ul-Cycle-fraction", "error", "line 4, field 'Cycle'.*expected an integer")(ul_with("Cycle", "3.5"))

# UL: the two list columns
_50 = ", ".join(["2.0"] * 48)
for _id, _value, _pattern in [
    ("49-values", _list(np.arange(49)), "49 values, expected exactly 50"),
    ("51-values", _list(np.arange(51)), "51 values, expected exactly 50"),
    ("empty-list", "[]", "empty list, expected 50 values"),
    ("token", f"[1.0, x, {_50}]", "value 2 of the list is 'x'"),
    ("token-short-list", "[0.0, foo, 2.0]", "value 2 of the list is 'foo'"),
    ("nan-token", f"[nan, {_50}, 2.0]", "value 1 .*finite"),
    ("no-brackets", ", ".join(["1.0"] * 50), "bracketed list"),
    ("text", "abc", "bracketed list"),
]:
    case(f"ul-qv-{_id}", "error", LINE4 + "'Capacity_Increment'.*" + _pattern)(
        ul_with("Capacity_Increment", _value))
for _id, _value, _pattern in [
    ("empty-list", "[]", "empty list"),
    ("inf-token", "[4.1, inf, 4.0]", "value 2 .*finite"),
    ("semicolons", "4.1; 4.0", "bracketed list"),
    ("token", "[4.1, volts, 4.0]", "value 2 of the list is 'volts'"),
]:
    case(f"ul-relaxation-{_id}", "error", LINE4 + "'Relaxation_Voltage'.*" + _pattern)(
        ul_with("Relaxation_Voltage", _value))

# UL: the file as a whole
for _column in UL_HEADER:
    def _drop(tmp, column=_column):
        rows = [{k: v for k, v in r.items() if k != column} for r in ul_rows(6)]
        return loads(ul_file(tmp, rows, header=[h for h in UL_HEADER if h != column]))

    case(f"ul-missing-{_column}", "error", f"unknown header.*UL lacks {_column}")(_drop)


@case("file-missing", "error", r"nothere\.csv.*not found")
def _(tmp):
    return loads(tmp / "nothere.csv")


@case("file-empty", "error", r"CY25-05_1-#4\.csv.*empty")
def _(tmp):
    path = ul_file(tmp)
    path.write_text("")
    return loads(path)


@case("file-header-only", "error", "no data rows")
def _(tmp):
    return loads(ul_file(tmp, []))


@case("file-ragged-row", "error", "line 3.*not a valid CSV")
def _(tmp):
    path = ul_file(tmp)
    lines = path.read_text().splitlines()
    lines[2] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    return loads(path)


@case("file-is-a-folder", "error", "is a folder")
def _(tmp):
    (tmp / "cells").mkdir()
    return loads(tmp / "cells")


@case("file-binary", "error", r"CY25-05_1-#4\.csv")
def _(tmp):
    path = tmp / "cells" / "CY25-05_1-#4.csv"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 8)
    return loads(path)


@case("file-forced-wrong-format", "error", "TPSL format: missing column")
def _(tmp):
    return loads(ul_file(tmp), "TPSL")


# UL: values that parse but no cell can have
case("ul-capacity-negative", "error", LINE4 + r"'Discharge_Capacity'.*-3200 mAh, expected a positive")(
    ul_with("Discharge_Capacity", -3200.0))
case("ul-capacity-zero", "error", LINE4 + "'Discharge_Capacity'.*expected a positive")(
    ul_with("Discharge_Capacity", 0.0))
case("ul-capacity-1e30", "error", LINE4 + "'Discharge_Capacity'.*1e\\+30 mAh.*times the median")(
    ul_with("Discharge_Capacity", 1e30))
case("ul-capacity-drop", "error", LINE4 + "'Discharge_Capacity'.*times the median")(
    ul_with("Discharge_Capacity", 33.0))
case("ul-capacity-in-ah", "error", "'Discharge_Capacity'.*too small.*look like Ah")(
    ul_all("Discharge_Capacity", lambda v, i: v / 1000.0))
case("ul-capacity-huge", "error", "'Discharge_Capacity'.*too large")(
    ul_all("Discharge_Capacity", lambda v, i: v * 1e6))
case("ul-qv-other-unit", "error", "'Capacity_Increment'.*different units")(
    ul_all("Capacity_Increment", lambda v, i: _list(np.arange(50) * 40e3)))
case("ul-cycles-shuffled", "error", r"'Cycle'.*cycle 3 follows cycle 5")(
    ul_all("Cycle", lambda v, i: [2, 5, 3, 4, 6, 7][i]))
case("ul-cycles-repeated", "error", r"'Cycle'.*cycle 3 follows cycle 3")(
    ul_all("Cycle", lambda v, i: [2, 3, 3, 4, 5, 6][i]))
case("ul-temperature-500", "error", LINE4 + r"'Temperature'.*500 is outside -50\.\.150")(
    ul_with("Temperature", 500))
case("ul-temperature-minus-100", "error", LINE4 + "'Temperature'.*outside")(
    ul_with("Temperature", -100))
case("ul-charge-negative", "error", LINE4 + "'Charge_Current'.*negative")(
    ul_with("Charge_Current", -0.5))
case("ul-discharge-negative", "error", LINE4 + "'Discharge_Current'.*negative")(
    ul_with("Discharge_Current", -1))
case("ul-relaxation-in-mv", "error", "'Relaxation_Voltage'.*look like mV")(
    ul_all("Relaxation_Voltage", lambda v, i: _list([4190.0, 4180.0, 4170.0, 4160.0])))
case("ul-temperature-70", "warning", "temperature 70 degC in 6 row")(
    ul_all("Temperature", lambda v, i: 70))
case("ul-temperature-minus-10", "warning", "temperature -10 degC in 1 row")(
    ul_with("Temperature", -10))
case("ul-discharge-15c", "warning", "Discharge_Current up to 15 C")(ul_with("Discharge_Current", 15))


@case("ul-name-says-other-temperature", "warning", r"CY45.*(45|Temperature)")
def _(tmp):
    return loads(ul_file(tmp, name="CY45-05_1-#4.csv"))


@case("ul-name-says-other-discharge", "warning", r"CY25-05_2.*(Discharge_Current|discharge)")
def _(tmp):
    return loads(ul_file(tmp, name="CY25-05_2-#4.csv"))


# LSD: the voltage window and the capacity in Ah
case("lsd-start-in-mv", "error", r"'Start_Voltage'.*looks like mV")(lsd_with("Start_Voltage", 3800.0, None))
case("lsd-end-5v", "error", r"'End_Voltage'.*5 V is outside")(lsd_with("End_Voltage", 5.0, None))
case("lsd-end-not-constant", "error", r"'End_Voltage'")(lsd_with("End_Voltage", 4.2))
case("lsd-start-text", "error", r"'Start_Voltage'.*expected a number, got 'abc'")(
    lsd_with("Start_Voltage", "abc"))
case("lsd-capacity-in-mah", "error", "'Discharge_Capacity'.*too large.*look like mAh")(
    lsd_with("Discharge_Capacity", lambda v, i: v * 1000.0, None))
case("lsd-capacity-negative", "error", "'Discharge_Capacity'.*expected a positive")(
    lsd_with("Discharge_Capacity", -1.9))
case("lsd-capacity-nan", "error", "'Discharge_Capacity'.*finite")(lsd_with("Discharge_Capacity", "nan"))

# TPSL: Cycle_Index, QV_Curve, Temperture (sic), capacities in Ah
case("tpsl-qv-51", "error", r"line 3 \(cycle 3\), field 'QV_Curve'.*51 values")(
    tpsl_with("QV_Curve", _list(np.arange(51))))
case("tpsl-qv-token", "error", "'QV_Curve'.*value 3 of the list is 'q'")(
    tpsl_with("QV_Curve", "[0.1, 0.2, q]"))
case("tpsl-temperature-text", "error", "'Temperture'.*expected a number")(tpsl_with("Temperture", "warm"))
case("tpsl-temperature-200", "error", "'Temperture'.*outside")(tpsl_with("Temperture", 200))
case("tpsl-cycle-text", "error", "'Cycle_Index'.*expected an integer")(tpsl_with("Cycle_Index", "two"))
case("tpsl-capacity-negative", "error", "'Max_Discharge_Capacity\\(Ah\\)'.*expected a positive")(
    tpsl_with("Max_Discharge_Capacity(Ah)", -2.3))
case("tpsl-capacity-in-mah", "error", "too large.*look like mAh")(
    tpsl_with("Max_Discharge_Capacity(Ah)", lambda v, i: v * 1000.0, None))
case("tpsl-cycles-backwards", "error", r"'Cycle_Index'.*follows")(
    tpsl_with("Cycle_Index", lambda v, i: [2, 3, 4, 3, 6, 7][i], None))
case("tpsl-temperature-65", "warning", "temperature 65 degC")(tpsl_with("Temperture", 65))


@case("tpsl-missing-column", "error", "unknown header.*TPSL lacks Cycle_Index")
def _(tmp):
    rows = [{k: v for k, v in r.items() if k != "Cycle_Index"} for r in tpsl_rows(4)]
    return loads(write_csv(tmp / "cells" / "#6" / "combined_data.csv",
                           [h for h in TPSL_HEADER if h != "Cycle_Index"], rows))


# ------------------------------------------------------------------ pulse workbooks
def pulse_rows(edit: Callable[[list[list]], None] | None = None) -> list[list]:
    header = ["SOC", "SOH", *pulse.FEATURES]
    rows = [header] + [[soc, 0.9, *np.round(np.linspace(3.5, 3.7, 21) + 0.001 * soc, 6)]
                       for soc in (5, 10, 15)]
    if edit:
        edit(rows)
    return rows


def workbook(edit=None, sheet: str = "S") -> Callable[[Path], Callable]:
    def build(tmp: Path):
        path = write_workbook(tmp / "pulse.xlsx", {"S": pulse_rows(edit)})
        return lambda: pulse.read_pulse_workbook(path, sheet)

    return build


def _set(row: int, column: str, value):
    def edit(rows):
        rows[row][rows[0].index(column)] = value

    return edit


case("pulse-u-in-mv", "error", r"Excel row 3, column 'U1'.*3850.*volts")(workbook(_set(2, "U1", 3850)))
case("pulse-u-text", "error", r"Excel row 2, column 'U5'.*'abc'")(workbook(_set(1, "U5", "abc")))
case("pulse-u-missing", "error", r"Excel row 4, column 'U21'")(workbook(_set(3, "U21", None)))
case("pulse-u-negative", "error", r"Excel row 2, column 'U2'.*outside")(workbook(_set(1, "U2", -3.5)))
case("pulse-soh-3", "error", r"column 'SOH'.*outside")(workbook(_set(1, "SOH", 3.0)))
case("pulse-soh-negative", "error", r"column 'SOH'.*outside")(workbook(_set(1, "SOH", -0.1)))
case("pulse-soh-text", "error", r"column 'SOH'")(workbook(_set(2, "SOH", "ninety")))
case("pulse-soc-fraction", "error", "percent")(
    workbook(lambda rows: [r.__setitem__(0, r[0] / 100) for r in rows[1:]]))
case("pulse-missing-column", "error", "'U7'")(workbook(lambda rows: [r.pop(rows[0].index("U7"))
                                                                     for r in rows[::-1]]))
case("pulse-no-rows", "error", "no data rows")(workbook(lambda rows: rows.__delitem__(slice(1, None))))
case("pulse-wrong-sheet", "error", "'T' not found")(workbook(sheet="T"))


@case("pulse-not-a-workbook", "error", "cannot be read as an .xlsx workbook")
def _(tmp):
    path = tmp / "pulse.xlsx"
    path.write_text("SOC,SOH\n5,0.9\n")
    return lambda: pulse.read_pulse_workbook(path, "S")


@case("pulse-missing-file", "error", "pulse workbook not found")
def _(tmp):
    return lambda: pulse.read_pulse_workbook(tmp / "none.xlsx", "S")


# ------------------------------------------------------------------ sorting tables
def sorting_folder(tmp: Path, edit_features=None, edit_traj=None) -> Path:
    """features.csv and capacity_trajectories.csv of three made-up cells."""
    folder = tmp / "sorting"
    folder.mkdir(parents=True)
    names = [c for j in (1, 2, 3) for c in sorting.feature_columns(j)]
    explicit = [c for c in sorting.EXPLICIT_COLUMNS]
    header = ["bat_num", *names, *explicit]
    rng = np.random.default_rng(0)
    rows = [[str(cell), *(f"{v:.6f}" for v in rng.normal(size=len(names))),
             *(f"{v:.4f}" for v in 1.8 + 0.01 * rng.normal(size=len(explicit)))] for cell in (1, 2, 3)]
    lines = [header] + rows
    if edit_features:
        edit_features(lines)
    (folder / sorting.FEATURES_FILE).write_text("\n".join(",".join(r) for r in lines) + "\n")
    traj = [["", "bat_num", "cycle", "capacity"]]
    k = 0
    for cell in (1, 2, 3):
        for cyc in range(1, 6):
            traj.append([str(k), str(cell), f"{cyc:.1f}", f"{1.9 - 0.01 * cyc:.4f}"])
            k += 1
    if edit_traj:
        edit_traj(traj)
    (folder / sorting.TRAJECTORIES_FILE).write_text("\n".join(",".join(r) for r in traj) + "\n")
    return folder


def sort_case(edit_features=None, edit_traj=None) -> Callable[[Path], Callable]:
    def build(tmp: Path):
        folder = sorting_folder(tmp, edit_features, edit_traj)
        return lambda: sorting.load_sorting(folder)

    return build


def _cell_set(line: int, column: str, value: str):
    def edit(lines):
        lines[line - 1][lines[0].index(column)] = value

    return edit


case("sort-feature-text", "error", r"features\.csv, line 3, field 'feature_1_2_4'.*'abc'")(
    sort_case(_cell_set(3, "feature_1_2_4", "abc")))
case("sort-feature-inf", "error", r"features\.csv, line 2, field 'capacity'.*finite")(
    sort_case(_cell_set(2, "capacity", "inf")))
case("sort-cell-duplicate", "error", r"features\.csv, line 4, field 'bat_num'.*already on line 3")(
    sort_case(_cell_set(4, "bat_num", "2")))
case("sort-cell-fraction", "error", r"line 2, field 'bat_num'.*integer")(
    sort_case(_cell_set(2, "bat_num", "1.5")))
case("sort-feature-missing-column", "error", r"features\.csv, line 1.*'feature_1_1_1'")(
    sort_case(lambda lines: lines[0].__setitem__(1, "feature_x")))
case("sort-trajectory-nan", "error", r"capacity_trajectories\.csv, line 5, field 'capacity'.*finite")(
    sort_case(edit_traj=_cell_set(5, "capacity", "nan")))
case("sort-trajectory-negative", "error", r"capacity_trajectories\.csv, line 5, field 'capacity'.*> 0 Ah")(
    sort_case(edit_traj=_cell_set(5, "capacity", "-1.88")))
case("sort-trajectory-in-mah", "error", r"capacity_trajectories\.csv.*too large.*look like mAh")(
    sort_case(edit_traj=lambda t: [r.__setitem__(3, str(float(r[3]) * 1000)) for r in t[1:]]))
case("sort-trajectory-cycles-back", "error", r"line 4, field 'cycle'.*increasing")(
    sort_case(edit_traj=_cell_set(4, "cycle", "1.0")))
case("sort-trajectory-cell-unknown", "error", r"cell 9 has no row")(
    sort_case(edit_traj=lambda t: t.append(["99", "9", "1.0", "1.9"])))
case("sort-features-empty", "error", r"features\.csv.*empty")(
    sort_case(lambda lines: lines.clear()))


@case("sort-trajectories-missing", "error", r"capacity_trajectories\.csv.*not found")
def _(tmp):
    folder = sorting_folder(tmp)
    (folder / sorting.TRAJECTORIES_FILE).unlink()
    return lambda: sorting.load_sorting(folder)


# ------------------------------------------------------------------ command line: configs
for _id, _args, _pattern in [
    ("unknown-experiment", ["run", "imoe-nope"], "unknown experiment 'imoe-nope'"),
    ("unknown-key", ["run", *TINY, "--set", "train.epoch=3"], "train.epoch"),
    ("key-without-value", ["run", *TINY, "--set", "train.epochs"], "train.epochs"),
    ("int-as-text", ["run", *TINY, "--set", "train.epochs=many"], "train.epochs.*many"),
    ("float-as-text", ["run", *TINY, "--set", "train.learning_rate=fast"], "learning_rate.*fast"),
    ("negative-mse-weight", ["run", *TINY, "--set", "train.mse_weight=-1"], "mse_weight"),
    ("both-loss-weights-zero", ["run", *TINY, "--set", "train.mse_weight=0",
                                "--set", "train.router_loss_weight=0"], "weight"),
    ("router-eps-zero", ["run", *TINY, "--set", "train.router_loss_eps=0"], "router_loss_eps"),
    ("cvae-negative-kl", ["run", "cvae-synthetic", "--smoke", "--set", "train.w_kl=-1"], "w_kl"),
    ("zero-epochs", ["run", *TINY, "--set", "train.epochs=0"], "epochs"),
    ("section-as-key", ["run", *TINY, "--set", "train=3"], "train"),
    ("show-unknown", ["show", "imoe-nope"], "unknown experiment"),
]:
    case(f"cli-{_id}", "error", _pattern)(lambda tmp, a=_args: [*a, "--workdir", str(tmp / "run")]
                                          if a[0] == "run" else a)


@case("cli-data-dir-missing", "error", r"nowhere")
def _(tmp):
    return ["run", "imoe-lsd", "--smoke", "--data-dir", str(tmp / "nowhere"), "--workdir", str(tmp / "run")]


@case("cli-data-dir-without-files", "error", r"86 of the 86 file\(s\) of the LSD split are missing.*and 83 more")
def _(tmp):
    (tmp / "data" / "imoe").mkdir(parents=True)
    return ["run", "imoe-lsd", "--smoke", "--data-dir", str(tmp / "data"), "--workdir", str(tmp / "run")]


# ------------------------------------------------------------------ command line: run folders
def user_folder(tmp: Path) -> Path:
    d = tmp / "mine"
    (d / "mydata").mkdir(parents=True)
    (d / "config.json").write_text('{"my": "own"}')
    (d / "thesis.tex").write_text("\\chapter{Results}")
    (d / "mydata" / "cell.csv").write_text("a,b\n1,2\n")
    return d


for _id, _where, _pattern in [
    ("overwrite-user-folder", lambda tmp: user_folder(tmp), "mine: it is not empty and holds no slbjax run"),
    ("overwrite-user-subfolder", lambda tmp: user_folder(tmp) / "mydata", "mydata: it is not empty"),
    ("overwrite-home", lambda tmp: Path.home(), "it is your home folder"),
    ("overwrite-working-dir", lambda tmp: Path("."), r"refusing to use \.: it holds the working directory"),
    ("overwrite-above-working-dir", lambda tmp: tmp, "it holds the working directory"),
]:
    case(f"cli-{_id}", "error", _pattern)(
        lambda tmp, w=_where: ["run", *TINY, "--workdir", str(w(tmp)), "--overwrite"])


@case("cli-overwrite-data-folder", "error", "it holds the data folder")
def _(tmp):
    mine = user_folder(tmp)
    return ["run", *TINY, "--data-dir", str(mine / "mydata"), "--workdir", str(mine), "--overwrite"]


@case("cli-workdir-holds-user-files", "error", r"mine.*(not empty|--overwrite)")
def _(tmp):
    return ["run", *TINY, "--workdir", str(user_folder(tmp))]


@case("cli-workdir-is-a-file", "error", r"notes\.txt")
def _(tmp):
    (tmp / "notes.txt").write_text("mine")
    return ["run", *TINY, "--workdir", str(tmp / "notes.txt")]


# ------------------------------------------------------------------ command line: finished runs
def run_copy(tmp: Path, damage: Callable[[Path], None] | None = None) -> Path:
    run = tmp / "run"
    shutil.copytree(RUN[0], run)
    if damage:
        damage(run)
    return run


RUN: list[Path] = []  # the module's tiny run, set by the test before a case is built


def predict_case(damage=None, *, output=None, input_=None, extra=()):
    def build(tmp: Path):
        run = run_copy(tmp, damage)
        cells = ul_file(tmp) if input_ is None else input_(tmp)
        out = str(tmp / "p.csv") if output is None else output(tmp)
        return ["predict", "--run", str(run), "--input", str(cells), "-o", out, *extra]

    return build


def _truncate(run: Path):
    for f in (run / "checkpoints").rglob("d/*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:20])


def _status(value: str):
    def damage(run: Path):
        import json

        marker = run / "slbjax-run.json"
        data = json.loads(marker.read_text())
        data["status"] = value
        marker.write_text(json.dumps(data))

    return damage


def _existing(tmp: Path) -> str:
    (tmp / "p.csv").write_text("my predictions\n")
    return str(tmp / "p.csv")


def _folder(tmp: Path) -> str:
    (tmp / "out").mkdir()
    return str(tmp / "out")


case("predict-truncated-checkpoint", "error", "checkpoint is damaged or incomplete")(predict_case(_truncate))
case("predict-checkpoint-without-meta", "error", "checkpoint is damaged or incomplete")(
    predict_case(lambda run: shutil.rmtree(next((run / "checkpoints").glob("*/meta")))))
case("predict-no-checkpoints", "error", "checkpoint")(
    predict_case(lambda run: shutil.rmtree(run / "checkpoints")))
case("predict-no-config", "error", "config.json")(predict_case(lambda run: (run / "config.json").unlink()))
case("predict-run-failed", "error", "failed")(predict_case(_status("failed")))
case("predict-run-still-running", "error", "running")(predict_case(_status("running")))
case("predict-output-exists", "error", r"p\.csv.*(exists|--overwrite)")(predict_case(output=_existing))
case("predict-output-is-folder", "error", "is a folder, expected a file name")(
    predict_case(output=_folder, extra=("--overwrite",)))
case("predict-input-missing", "error", "nothing.csv")(predict_case(input_=lambda tmp: tmp / "nothing.csv"))
case("predict-input-bad-cell", "error", LINE4 + "'Temperature'")(
    predict_case(input_=lambda tmp: ul_file(tmp, [*ul_rows(2), {**ul_rows(3)[2], "Temperature": "x"},
                                                  *ul_rows(6)[3:]])))


@case("predict-input-folder-without-cells", "error", r"empty.*(no cell files|\.csv)")
def _(tmp):
    (tmp / "empty").mkdir()
    return predict_case(input_=lambda t: t / "empty")(tmp)


@case("predict-run-missing", "error", r"norun")
def _(tmp):
    return ["predict", "--run", str(tmp / "norun"), "--input", str(ul_file(tmp)), "-o", str(tmp / "p.csv")]


@case("predict-run-not-a-run", "error", r"mine")
def _(tmp):
    return ["predict", "--run", str(user_folder(tmp)), "--input", str(ul_file(tmp)), "-o", str(tmp / "p.csv")]


@case("triage-with-an-imoe-run", "error", r"life")
def _(tmp):
    return ["triage", "--run", str(run_copy(tmp)), "--input", str(ul_file(tmp)), "-o", str(tmp / "t")]


@case("generate-with-an-imoe-run", "error", r"CVAE|cvae")
def _(tmp):
    return ["generate", "--run", str(run_copy(tmp)), "--soc", "0.3", "--soh", "0.9", "-o",
            str(tmp / "g.csv")]


# ------------------------------------------------------------------ the test
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outcome(action, capsys) -> tuple[str, str]:
    """(error | warning | traceback | silent, the text that tells)."""
    if isinstance(action, list):
        try:
            rc = main(action)
        except SystemExit as e:  # argparse
            rc = e.code
        err = capsys.readouterr().err.strip().splitlines()
        errors = [ln for ln in err if ln.startswith("error: ")]
        if any("Traceback" in ln for ln in err) or rc not in (0, 2):
            return "traceback", "\n".join(err)
        if rc == 2 and len(errors) == 1 and err[-1] == errors[0]:
            return "error", errors[0]
        if rc == 2:
            return "error-unclear", "\n".join(err)
        warned = [ln for ln in err if "warning" in ln]
        return ("warning", "\n".join(warned)) if warned else ("silent", "\n".join(err))
    try:
        result = action()
    except SlbjaxError as e:
        text = f"error: {e}"
        return ("error", text) if "\n" not in text else ("error-unclear", text)
    except Exception as e:  # noqa: BLE001 - the outcome being measured
        return "traceback", f"{type(e).__name__}: {e}"
    warnings = getattr(result, "warnings", ())
    return ("warning", "\n".join(warnings)) if warnings else ("silent", "")


def test_at_least_the_reported_cases():
    assert len(CASES) >= 118 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, tmp_path, capsys, request, monkeypatch):
    # the home and working folders of the cases lie in tmp_path: home/ and home/work/
    (tmp_path / "home" / "work").mkdir(parents=True)
    (tmp_path / "home" / "work" / "notes.md").write_text("mine")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "home" / "work")
    if c.id.startswith(("predict-", "triage-", "generate-")):
        RUN[:] = [request.getfixturevalue("tiny_imoe_run")]
        capsys.readouterr()
    action = c.build(tmp_path)
    before = _snapshot(tmp_path)
    got, text = outcome(action, capsys)
    assert got == c.outcome, f"{c.id}: {got}\n{text}"
    assert re.search(c.pattern, text), f"{c.id}: {text!r} does not match {c.pattern!r}"
    after = _snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before, f"{c.id}: a user file changed or went"

"""Pulse-voltage feature workbooks of Tao et al. (Nat. Commun. 2024).

Each published workbook holds one row per sample (a retired cell, or for the
NMC 2.1 Ah lab cells one cell at one ageing checkpoint) at one SOC level: the
turning-point voltages ``U1`` ... ``U41`` of a 3 s pulse test, the SOC level (in
percent of the nominal capacity) and the SOH.  The paper and this package use
``U1`` ... ``U21`` and the rows with SOC <= 50 %.

Which file and sheet each battery type reads (``data.battery``)::

    NMC2.1  pulse/NMC_2.1Ah_W_3000.xlsx  sheet "Sheet1"   cell code in Idx: SOC-D3-100.xls -> D3
    NMC21   pulse/NMC_21Ah_W_3000.xlsx   sheet "SOC ALL"  cell B_<n> inside Idx
    LFP     pulse/LFP_35Ah_W_3000.xlsx   sheet "SOC ALL"  cell from the No. column (B_<n>)
    LMO     pulse/LMO_10Ah_W_3000.xlsx   sheet "SOC ALL"  laid out like LFP, pulse width column Pt

The physical-cell identity is kept so that splits can group the samples of
one cell (the 67 NMC 2.1 Ah samples come from 12 cells).  Every problem with a
workbook is raised as :class:`~slbjax.errors.DataError` naming the file, the
sheet, the row (0-based data row and the Excel row number) and the column.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import numpy as np

from slbjax import provenance
from slbjax.data import plausible
from slbjax.errors import DataError
from slbjax.paths import require_data_dir

NUM_FEATURES = 21
FEATURES: tuple[str, ...] = tuple(f"U{i}" for i in range(1, NUM_FEATURES + 1))
SOC_LEVELS_PCT: tuple[int, ...] = tuple(range(5, 55, 5))  # the levels 5, 10, ..., 50 %
MAX_SOC_PCT = 50.0
PULSE_FOLDER = "pulse"


@dataclasses.dataclass(frozen=True)
class PulseSource:
    """Where one battery type's features are published."""

    battery: str
    filename: str
    sheet: str
    label: str


SOURCES: dict[str, PulseSource] = {
    "NMC2.1": PulseSource("NMC2.1", "NMC_2.1Ah_W_3000.xlsx", "Sheet1", "NMC 2.1 Ah"),
    "NMC21": PulseSource("NMC21", "NMC_21Ah_W_3000.xlsx", "SOC ALL", "NMC 21 Ah"),
    "LFP": PulseSource("LFP", "LFP_35Ah_W_3000.xlsx", "SOC ALL", "LFP 35 Ah"),
    "LMO": PulseSource("LMO", "LMO_10Ah_W_3000.xlsx", "SOC ALL", "LMO 10 Ah"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class PulseData:
    """N pulse-test samples with their SOC, SOH and cell identity.

    Attributes:
      battery: ``"NMC2.1"``, ``"NMC21"``, ``"LFP"``, ``"LMO"`` or ``"synthetic"``.
      source: file the rows were read from (or ``"synthetic"``).
      sheet: sheet name (``""`` for synthetic data).
      features: [N, 21] float64 voltages U1..U21 (V).
      soc: [N] float64 SOC as a fraction (0.05 ... 0.50).
      soh: [N] float64 SOH as a fraction (can exceed 1).
      cell: [N] str physical cell, e.g. ``"D3"`` or ``"B_12"``; samples of one
        cell share it.
      sample: [N] str sample identity (cell and ageing checkpoint for NMC 2.1 Ah,
        e.g. ``"D3-100"``; equal to ``cell`` otherwise).
      row: [N] int 0-based data row in the sheet (the header not counted), -1
        for synthetic rows.
      notes: what was noticed while loading.
    """

    battery: str
    source: str
    sheet: str
    features: np.ndarray
    soc: np.ndarray
    soh: np.ndarray
    cell: np.ndarray
    sample: np.ndarray
    row: np.ndarray
    notes: tuple[str, ...] = ()

    @property
    def num_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def soc_pct(self) -> np.ndarray:
        """[N] SOC in percent, rounded to 1e-6 so that levels compare exactly."""
        return np.round(self.soc * 100.0, 6)

    @property
    def conditions(self) -> np.ndarray:
        """[N, 2] float64 (SOC, SOH) condition vectors."""
        return np.stack([self.soc, self.soh], axis=1)

    def soc_levels_pct(self) -> list[float]:
        """Sorted distinct SOC levels (percent)."""
        return sorted(set(self.soc_pct.tolist()))


def pulse_path(data_dir: Path, battery: str) -> Path:
    """``<data_dir>/pulse/<published file name>`` of a battery type."""
    return Path(data_dir) / PULSE_FOLDER / source_for(battery).filename


def source_for(battery: str) -> PulseSource:
    try:
        return SOURCES[battery]
    except KeyError:
        raise DataError(
            None, f"unknown battery type {battery!r}; known: {', '.join(SOURCES)}"
        ) from None


def load_pulse(
    data_dir: Path | None, battery: str, *, max_soc_pct: float = MAX_SOC_PCT
) -> PulseData:
    """Reads the published workbook of ``battery`` from ``<data_dir>/pulse``.

    Args:
      data_dir: folder laid out like ``shared/data`` (holding ``pulse/``).
      battery: ``"NMC2.1"``, ``"NMC21"``, ``"LFP"`` or ``"LMO"``.
      max_soc_pct: rows with a SOC above this (percent) are dropped.

    Returns:
      The rows with SOC <= ``max_soc_pct`` in sheet order.

    Raises:
      DataError: missing folder or file, or a workbook that breaks the schema.
    """
    src = source_for(battery)
    data_dir = require_data_dir(data_dir, f"the {src.label} pulse data")
    return read_pulse_workbook(
        pulse_path(data_dir, battery), src.sheet, battery=battery, max_soc_pct=max_soc_pct
    )


def read_pulse_workbook(
    path: str | Path, sheet: str, *, battery: str = "", max_soc_pct: float = MAX_SOC_PCT
) -> PulseData:
    """Parses and checks one pulse-feature sheet (see :func:`load_pulse`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path,
            f"pulse workbook not found (battery {battery or '?'}, sheet {sheet!r}); expected the "
            "published file under <data-dir>/pulse/ (see shared/data/README.md, section 1)",
        )
    provenance.record(path)
    stat = path.stat()
    header, rows = _read_sheet(str(path.resolve()), stat.st_mtime_ns, stat.st_size, sheet)
    return _parse_rows(path, sheet, battery, header, rows, max_soc_pct)


@functools.lru_cache(maxsize=16)
def _read_sheet(
    path: str, mtime_ns: int, size: int, sheet: str
) -> tuple[tuple[str, ...], tuple[tuple, ...]]:
    """(header, data rows) of one sheet; cached on (path, mtime, size, sheet)."""
    del mtime_ns, size  # cache keys only: a rewritten file is read again
    import openpyxl  # imported here: only the pulse loader needs it

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # zip, xml and format errors all mean "not a workbook"
        raise DataError(
            path, f"cannot be read as an .xlsx workbook ({type(e).__name__}: {e})"
        ) from None
    try:
        if sheet not in wb.sheetnames:
            present = ", ".join(repr(s) for s in wb.sheetnames) or "none"
            raise DataError(
                path, f"sheet {sheet!r} not found; sheets present: {present}", field=sheet
            )
        it = wb[sheet].iter_rows(values_only=True)
        header_row = next(it, None)
        rows = tuple(tuple(r) for r in it)
    finally:
        wb.close()
    if header_row is None or all(v is None for v in header_row):
        raise DataError(path, f"sheet {sheet!r} is empty (no header row)", field=sheet)
    header = tuple("" if v is None else str(v).strip() for v in header_row)
    # openpyxl may report formatted but empty rows at the end of a sheet
    while rows and all(v is None for v in rows[-1]):
        rows = rows[:-1]
    return header, rows


def _excel_row(row: int) -> int:
    return row + 2  # 0-based data row -> Excel row number (header on row 1)


def _number(path, sheet, row, column, value) -> float:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        what = "an empty cell" if value is None or isinstance(value, str) else repr(value)
        raise DataError(
            path,
            f"sheet {sheet!r}, Excel row {_excel_row(row)}, column {column!r}: {what}, expected a number",
            row=row,
            field=column,
        )
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(
            path,
            f"sheet {sheet!r}, Excel row {_excel_row(row)}, column {column!r}: non-numeric "
            f"value {value!r}, expected a number",
            row=row,
            field=column,
        ) from None
    if not math.isfinite(x):
        raise DataError(
            path,
            f"sheet {sheet!r}, Excel row {_excel_row(row)}, column {column!r}: {value!r} is not finite",
            row=row,
            field=column,
        )
    return x


_B_NUMBER = re.compile(r"_B_(\d+)_")
_NMC21_CODE = re.compile(r"SOC-([A-Za-z]+\d+)-(\d+)")


def _identity(values: dict[str, object]) -> tuple[str, str] | None:
    """(cell, sample) from the identity columns of one row, or None."""
    number = values.get("No.")
    if isinstance(number, int | float) and not isinstance(number, bool):
        cell = f"B_{int(number)}"
        return cell, cell
    for col in ("File_Name", "Idx"):
        text = values.get(col)
        if not isinstance(text, str):
            continue
        m = _B_NUMBER.search(text)
        if m:
            cell = f"B_{int(m.group(1))}"
            return cell, cell
        m = _NMC21_CODE.search(text)
        if m:
            return m.group(1), f"{m.group(1)}-{m.group(2)}"
    return None


def _parse_rows(path, sheet, battery, header, rows, max_soc_pct) -> PulseData:
    index = {}
    for i, name in enumerate(header):
        index.setdefault(name, i)
    for column in ("SOC", "SOH", *FEATURES):
        if column not in index:
            found = ", ".join(h for h in header if h) or "none"
            raise DataError(
                path,
                f"sheet {sheet!r}: required column {column!r} is missing (header row, Excel row 1); "
                f"columns found: {found}",
                field=column,
            )
    if not rows:
        raise DataError(path, f"sheet {sheet!r} holds a header but no data rows", field=sheet)

    id_columns = [c for c in ("No.", "File_Name", "Idx") if c in index]
    feats, socs, sohs, cells, samples, row_ids = [], [], [], [], [], []
    missing_identity = 0
    for r, values in enumerate(rows):
        if all(v is None for v in values):
            continue  # blank line inside the sheet

        def get(column, values=values):
            i = index[column]
            return values[i] if i < len(values) else None

        soc = _number(path, sheet, r, "SOC", get("SOC"))
        if not 0.0 <= soc <= 100.0:
            raise DataError(
                path,
                f"sheet {sheet!r}, Excel row {_excel_row(r)}, column 'SOC': {soc:g} is outside "
                "0-100 (SOC is stored in percent)",
                row=r,
                field="SOC",
            )
        soh = _number(path, sheet, r, "SOH", get("SOH"))
        if not 0.0 < soh < 2.0:
            raise DataError(
                path,
                f"sheet {sheet!r}, Excel row {_excel_row(r)}, column 'SOH': {soh:g} is outside "
                "(0, 2) (SOH is a fraction of the nominal capacity)",
                row=r,
                field="SOH",
            )
        u = [_number(path, sheet, r, c, get(c)) for c in FEATURES]
        for c, value in zip(FEATURES, u, strict=True):
            plausible.voltage(value, f"pulse voltage {c}", lambda problem, _row, r=r, c=c: DataError(
                path, f"sheet {sheet!r}, Excel row {_excel_row(r)}, column {c!r}: {problem}",
                row=r, field=c))
        ident = _identity({c: get(c) for c in id_columns})
        if ident is None:
            missing_identity += 1
            ident = (f"row{r}", f"row{r}")
        if soc > max_soc_pct + 1e-9:
            continue
        feats.append(u)
        socs.append(soc / 100.0)
        sohs.append(soh)
        cells.append(ident[0])
        samples.append(ident[1])
        row_ids.append(r)

    socs_arr = np.asarray(socs, np.float64)
    if not feats:
        raise DataError(path, f"sheet {sheet!r}: no row has SOC <= {max_soc_pct:g} %", field="SOC")
    if np.all(socs_arr * 100.0 <= 1.0):
        raise DataError(
            path,
            f"sheet {sheet!r}, column 'SOC': every value is <= 1; the workbooks store SOC in "
            "percent (5, 10, ...), not as a fraction",
            field="SOC",
        )
    notes = []
    if missing_identity:
        notes.append(
            f"{missing_identity} rows have no cell identity (no No./File_Name/Idx with B_<n> or "
            "SOC-<cell>-<checkpoint>): each such row counts as its own cell"
        )
    return PulseData(
        battery=battery,
        source=str(path),
        sheet=sheet,
        features=np.asarray(feats, np.float64).reshape(-1, NUM_FEATURES),
        soc=socs_arr,
        soh=np.asarray(sohs, np.float64),
        cell=np.asarray(cells, dtype=object),
        sample=np.asarray(samples, dtype=object),
        row=np.asarray(row_ids, np.int64),
        notes=tuple(notes),
    )

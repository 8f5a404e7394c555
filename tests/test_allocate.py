"""Application catalogue and allocation of cell groups (slbjax.decide.allocate)."""

from __future__ import annotations

import itertools
import math
import tomllib

import numpy as np
import pytest

from slbjax.decide import allocate as A
from slbjax.errors import DataError


def app(name="a", *, c_rate=0.5, entry=0.55, eol=0.4, years=1.0, per_year=100.0, value=1.0,
        demand=math.inf) -> A.Application:
    return A.Application(name=name, c_rate=c_rate, entry_soh=entry, end_of_life_soh=eol,
                         service_years=years, cycles_per_year=per_year, value=value,
                         demand_kwh=demand, sources={})


# ---------------------------------------------------------------- life_to_threshold
def test_life_to_threshold_by_hand():
    # nominal 2.4 Ah, SOH 0.7 -> 1.68 Ah: first at or below at index 2 -> 3 cycles
    assert A.life_to_threshold(np.array([2.0, 1.9, 1.5, 1.4]), 2.4, 0.7) == 3
    # exactly on the threshold counts (the predicted trajectories end flat on it)
    assert A.life_to_threshold(np.array([2.0, 1.2, 1.2]), 2.4, 0.5) == 2
    # already below on the first predicted cycle
    assert A.life_to_threshold(np.array([1.0, 0.9]), 2.4, 0.5) == 1
    # never reached: the full length (a lower bound on the life)
    assert A.life_to_threshold(np.array([2.0, 1.9, 1.8]), 2.4, 0.5) == 3
    assert A.life_to_threshold(np.array([]), 2.4, 0.5) == 0
    # a lower end-of-life SOH never gives a shorter life
    q = np.linspace(2.0, 0.8, 50)
    assert A.life_to_threshold(q, 2.4, 0.4) > A.life_to_threshold(q, 2.4, 0.6)


def test_usable_energy_by_hand():
    # 10 cells in series, weakest 1.8 Ah, 3.6 V: 64.8 Wh
    out = A.usable_energy_kwh(np.array([10, 5]), np.array([1.8, 2.0]), 3.6)
    np.testing.assert_allclose(out, [0.0648, 0.036])


# ---------------------------------------------------------------- bundled catalogue
SCENARIOS = ["renewable integration", "frequency regulation", "peak shaving", "backup power",
             "microgrid", "commercial and industrial", "buildings", "EV-charging buffer"]


def test_bundled_catalogue_loads_with_a_source_for_every_number():
    apps = A.load_catalogue()
    assert [a.name for a in apps] == SCENARIOS
    for a in apps:
        assert set(a.sources) == set(A.NUMBER_FIELDS), a.name
        for field, source in a.sources.items():
            assert source.strip(), (a.name, field)
            # a number that says it is an assumption is flagged as one
            if source.lower().startswith("assumption"):
                assert field in a.assumed, (a.name, field)
        assert a.end_of_life_soh < a.entry_soh <= 1
        assert a.required_cycles == a.service_years * a.cycles_per_year
    by = {a.name: a for a in apps}
    # the review gives the standards' floor and the pilots' C-rates; microgrid has no pilot
    assert by["renewable integration"].entry_soh == 0.55
    assert "c_rate" in by["microgrid"].assumed
    assert "c_rate" not in by["backup power"].assumed
    assert by["frequency regulation"].c_rate == pytest.approx(1.2 / 0.72, abs=0.005)
    assert by["backup power"].c_rate == pytest.approx(4 / 1.7, abs=0.005)
    assert by["buildings"].service_years == 5 and "service_years" not in by["buildings"].assumed
    # values and demands are not in the sources
    assert all({"value", "demand_kwh"} <= a.assumed for a in apps)


def test_bundled_file_numbers_are_all_sourced_tables():
    raw = tomllib.loads(A.bundled_catalogue().read_text(encoding="utf-8"))
    for entry in raw["application"]:
        for key, v in entry.items():
            if key != "name":
                assert isinstance(v, dict) and {"value", "source"} <= set(v), (entry["name"], key)


# ---------------------------------------------------------------- bad catalogues
GOOD = """
[[application]]
name = "site"
c_rate = { value = 0.5, source = "s" }
entry_soh = { value = 0.55, source = "s" }
end_of_life_soh = { value = 0.4, source = "s" }
service_years = { value = 2, source = "s", assumed = true }
cycles_per_year = { value = 100, source = "s", assumed = true }
value = { value = 1.0, source = "s", assumed = true }
demand_kwh = { value = inf, source = "s", assumed = true }
"""


def test_good_user_catalogue(tmp_path):
    p = tmp_path / "apps.toml"
    p.write_text(GOOD)
    (a,) = A.load_catalogue(p)
    assert (a.name, a.required_cycles, a.demand_kwh) == ("site", 200.0, math.inf)
    assert a.assumed == {"service_years", "cycles_per_year", "value", "demand_kwh"}


def _replace(line_start: str, new: str) -> str:
    lines = [new if ln.startswith(line_start) else ln for ln in GOOD.splitlines()]
    return "\n".join(lines) + "\n"


BAD = {
    "missing field": (_replace("c_rate", ""), "site.c_rate", "missing"),
    "wrong type": (_replace("c_rate", 'c_rate = { value = "fast", source = "s" }'),
                   "site.c_rate", "number"),
    "bare number": (_replace("c_rate", "c_rate = 0.5"), "site.c_rate", "source"),
    "no source": (_replace("c_rate", "c_rate = { value = 0.5 }"), "site.c_rate", "source"),
    "empty source": (_replace("c_rate", 'c_rate = { value = 0.5, source = " " }'),
                     "site.c_rate", "source"),
    "soh above 1": (_replace("entry_soh", 'entry_soh = { value = 1.2, source = "s" }'),
                    "site.entry_soh", "(0, 1]"),
    "soh zero": (_replace("end_of_life_soh", 'end_of_life_soh = { value = 0, source = "s" }'),
                 "site.end_of_life_soh", "(0, 1]"),
    "eol above entry": (_replace("end_of_life_soh",
                                 'end_of_life_soh = { value = 0.6, source = "s" }'),
                        "site.end_of_life_soh", "below"),
    "eol equals entry": (_replace("end_of_life_soh",
                                  'end_of_life_soh = { value = 0.55, source = "s" }'),
                         "site.end_of_life_soh", "below"),
    "negative value": (_replace("value", 'value = { value = -1, source = "s" }'),
                       "site.value", ">= 0"),
    "negative demand": (_replace("demand_kwh", 'demand_kwh = { value = -5, source = "s" }'),
                        "site.demand_kwh", ">= 0"),
    "zero c-rate": (_replace("c_rate", 'c_rate = { value = 0, source = "s" }'),
                    "site.c_rate", "> 0"),
    "infinite years": (_replace("service_years", 'service_years = { value = inf, source = "s" }'),
                       "site.service_years", "finite"),
    "assumed not bool": (_replace("value", 'value = { value = 1, source = "s", assumed = "yes" }'),
                         "site.value", "true or false"),
    "unknown field": (GOOD + 'c_rat = { value = 1, source = "s" }\n', "site.c_rat", "unknown"),
    "duplicate name": (GOOD + GOOD, "site.name", "duplicate"),
    "reserved name": (GOOD.replace('"site"', '"recycle"'), "recycle.name", "reserved"),
    "no name": (_replace("name", ""), "application 1.name", "non-empty string"),
    "no applications": ("title = 'x'\n", "application", "[[application]]"),
    "not toml": ("[[application]\nname = 'x'\n", None, "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_catalogue_raises_one_line_error(tmp_path, case):
    text, field, expected = BAD[case]
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(DataError) as err:
        A.load_catalogue(p)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"file {p}")
    assert err.value.field == field
    if field is not None:
        assert repr(field) in msg
    assert expected in msg


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        A.load_catalogue(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(err.value)


# ---------------------------------------------------------------- allocation: constraints
def test_group_below_floor_or_eol_never_gets_the_application():
    apps = [app("rich", entry=0.7, eol=0.6, value=5.0), app("poor", value=1.0)]
    soh = np.array([0.69, 0.75, 0.58])
    life = np.full((3, 2), 1000.0)
    out = A.allocate(apps, soh, np.ones(3), life)
    assert list(out.table.application) == ["poor", "rich", "poor"]
    assert "rich: SOH 0.69 < entry 0.7" in out.table.refused[0]
    assert "SOH 0.58 <= end of life 0.6" in out.table.refused[2]
    assert out.table.refused[1] == ""
    assert out.served_value == pytest.approx(1 + 5 + 1)


def test_demand_is_never_exceeded():
    apps = [app("small", value=3.0, demand=2.0), app("big", value=1.0)]
    out = A.allocate(apps, np.full(3, 0.8), np.ones(3), np.full((3, 2), 1000.0))
    assert sorted(out.table.application) == ["big", "small", "small"]
    assert out.served_value == pytest.approx(3 + 3 + 1)
    # a group larger than the whole demand is refused outright
    out = A.allocate(apps, np.array([0.8]), np.array([2.5]), np.full((1, 2), 1000.0))
    assert out.table.application[0] == "big"
    assert "energy 2.5 kWh > demand 2" in out.table.refused[0]


def test_life_bound_is_respected_at_the_boundary():
    apps = [app("long", years=3, per_year=300, value=2.0)]  # 900 cycles
    out = A.allocate(apps, np.full(2, 0.8), np.ones(2), np.array([[899.0], [900.0]]))
    assert list(out.table.application) == ["recycle", "long"]
    assert out.table.refused[0] == "long: life 899 < 900 cycles"


def test_life_column_of_each_application_is_used():
    # life to 60 % is short, to 40 % long: only the 40 % application is covered
    apps = [app("to60", entry=0.7, eol=0.6, value=2.0), app("to40", value=1.0)]
    out = A.allocate(apps, np.array([0.8]), np.ones(1), np.array([[50.0, 400.0]]))
    assert out.table.application[0] == "to40"
    assert "to60: life 50 < 100 cycles" in out.table.refused[0]


def test_untested_c_rate_is_refused_unless_relaxed():
    apps = [app("fast", c_rate=1.67, value=2.0), app("slow", c_rate=0.25, value=1.0)]
    args = (np.array([0.8]), np.ones(1), np.full((1, 2), 1000.0))
    out = A.allocate(apps, *args)
    assert out.table.application[0] == "slow"
    assert out.table.refused[0] == "fast: C-rate 1.67 > tested 1"
    assert A.allocate(apps, *args, tested_c_rate=2.0).table.application[0] == "fast"
    assert A.allocate(apps, *args, tested_c_rate=None).table.application[0] == "fast"


def test_recycling_value_and_labels():
    apps = [app("cheap", value=0.2), app("better", value=1.0, entry=0.9, eol=0.5)]
    out = A.allocate(apps, np.array([0.8, 0.8]), np.array([1.0, 2.0]), np.full((2, 2), 1e3),
                     groups=["g7", "g9"], recycling_value=0.5)
    assert list(out.table.group) == ["g7", "g9"]
    assert list(out.table.application) == ["recycle", "recycle"]
    assert out.served_value == pytest.approx(0.5 * 3.0)
    assert "cheap: value 0.2 <= recycling 0.5" in out.table.refused[0]


def test_bundled_catalogue_on_lab_cells():
    apps = A.load_catalogue()
    names = [a.name for a in apps]
    soh = np.array([0.78, 0.62, 0.5])
    life = np.full((3, len(apps)), 2000.0)
    out = A.allocate(apps, soh, np.full(3, 0.07), life)
    got = list(out.table.application)
    # at 1C tested, frequency regulation (1.67C) and backup (2.35C) are out
    assert not out.feasible[:, names.index("frequency regulation")].any()
    assert not out.feasible[:, names.index("backup power")].any()
    assert got[0] not in ("frequency regulation", "backup power", "recycle")
    assert got[1] not in ("frequency regulation", "EV-charging buffer")  # below their 65 % entry
    assert got[2] == "recycle"  # below the 55 % standards floor
    assert "entry 0.55" in out.table.refused[2]


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\[G, A\]"):
        A.allocate([app()], np.ones(2), np.ones(2), np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        A.allocate([app()], np.ones(1), np.ones(1), np.full((1, 1), np.nan))


# ---------------------------------------------------------------- allocation: optimality
def brute_force(apps, soh, energy, life, tested, recycling):
    """Best served value over every assignment that meets the constraints (own checks)."""
    def allowed(g, a):
        p = apps[a]
        return (soh[g] >= p.entry_soh and soh[g] > p.end_of_life_soh
                and life[g, a] >= p.required_cycles and p.c_rate <= tested)

    best = -math.inf
    for choice in itertools.product(range(-1, len(apps)), repeat=len(soh)):
        if any(a >= 0 and not allowed(g, a) for g, a in enumerate(choice)):
            continue
        used = np.zeros(len(apps))
        for g, a in enumerate(choice):
            if a >= 0:
                used[a] += energy[g]
        if any(used[a] > apps[a].demand_kwh + 1e-12 for a in range(len(apps))):
            continue
        best = max(best, sum(apps[a].value * energy[g] if a >= 0 else recycling * energy[g]
                             for g, a in enumerate(choice)))
    return best


def random_instance(rng):
    num_groups, num_apps = rng.integers(1, 6), rng.integers(1, 4)
    apps = []
    for a in range(num_apps):
        entry = rng.uniform(0.55, 0.75)
        apps.append(app(f"app{a}", c_rate=rng.choice([0.25, 0.8, 1.5]), entry=entry,
                        eol=entry - rng.uniform(0.05, 0.2), years=1.0,
                        per_year=float(rng.integers(100, 600)),
                        value=float(rng.uniform(0, 2)),
                        demand=float(rng.choice([math.inf, rng.uniform(0.5, 4.0)]))))
    soh = rng.uniform(0.45, 0.85, num_groups)
    energy = rng.uniform(0.3, 2.0, num_groups).round(2)
    life = rng.integers(0, 800, (num_groups, num_apps)).astype(float)
    return apps, soh, energy, life


@pytest.mark.parametrize("seed", range(80))
def test_random_instances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    apps, soh, energy, life = random_instance(rng)
    tested = 1.0
    recycling = float(rng.choice([0.0, 0.3]))
    out = A.allocate(apps, soh, energy, life, tested_c_rate=tested, recycling_value=recycling)
    assert out.served_value == pytest.approx(
        brute_force(apps, soh, energy, life, tested, recycling), rel=1e-9, abs=1e-12)
    # and the returned assignment itself meets every constraint
    names = [a.name for a in apps]
    used = np.zeros(len(apps))
    for g, name in enumerate(out.table.application):
        if name == A.RECYCLE:
            continue
        a = names.index(name)
        p = apps[a]
        assert soh[g] >= p.entry_soh and soh[g] > p.end_of_life_soh
        assert life[g, a] >= p.required_cycles and p.c_rate <= tested
        used[a] += energy[g]
    assert all(used[a] <= apps[a].demand_kwh * (1 + 1e-9) for a in range(len(apps)))
    assert out.served_value == pytest.approx(out.table.value.sum())

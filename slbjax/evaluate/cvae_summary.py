"""Per-case summary and the flat ``metrics.json`` numbers of a generative SOH run.

Metric keys (k = case): ``case{k}_soh_mape_measured[_std]_pct`` (phase 1),
``case{k}_soh_mape_generated[_std]_pct``, ``case{k}_generation_mape_pct``,
``case{k}_generation_kl`` (phase 2 and generation), the generated/generation
keys with the suffixes ``_honest`` (SOH protocol ``train``) and, for the
extrapolation cases, ``_eq89`` and ``_eq89_honest``;
``case{k}_soh_mape_generated_seed_std_pct*`` with more than one seed; the means
``interp_*`` (cases 0-3) and ``extrap_*`` (cases 4-7) of the same fields;
``selected_{interp,extrap}_soh_mape_generated_pct`` (the variant and protocol
the config selects).  Unsuffixed keys always mean ``authors_shift`` +
``test_rows``, whatever the config selects.
"""

from __future__ import annotations

import numpy as np

from slbjax.configs.cvae import EXTRAPOLATION_CASES, INTERPOLATION_CASES, PROTOCOLS, CvaeConfig

RECORD_METRICS = (
    "soh_mape_measured_pct",
    "soh_mape_measured_std_pct",
    "soh_mape_generated_pct",
    "soh_mape_generated_std_pct",
    "generation_mape_pct",
    "generation_mape_feature_std_pct",
    "generation_kl",
)


def suffix(variant: str, protocol: str) -> str:
    """Metric-key suffix of a (variant, protocol): ``""``, ``_eq89``, ``_honest``, ``_eq89_honest``."""
    return ("_eq89" if variant == "eq89" else "") + ("_honest" if protocol == "train" else "")


def summarise(records: list[dict]) -> list[dict]:
    """Per (case, protocol, variant): means over SOC levels, then over seeds.

    Args:
      records: rows of :func:`slbjax.evaluate.unseen_soc.per_soc_records`.

    Returns:
      Rows with ``case``, ``protocol``, ``variant``, ``num_seeds``, the means of
      :data:`RECORD_METRICS` and ``soh_mape_generated_seed_std_pct`` (std over seeds).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["case"], r["protocol"], r["variant"]), []).append(r)
    out = []
    for (case, protocol, variant), rs in sorted(groups.items()):
        seeds = sorted({r["seed_index"] for r in rs})
        per_seed = {
            m: [np.mean([r[m] for r in rs if r["seed_index"] == s]) for s in seeds]
            for m in RECORD_METRICS
        }
        row = {"case": case, "protocol": protocol, "variant": variant, "num_seeds": len(seeds)}
        row.update({m: float(np.mean(v)) for m, v in per_seed.items()})
        row["soh_mape_generated_seed_std_pct"] = float(np.std(per_seed["soh_mape_generated_pct"]))
        out.append(row)
    return out


def flat_metrics(cfg: CvaeConfig, summary: list[dict]) -> dict[str, float]:
    """The flat ``metrics.json`` numbers of :func:`summarise`'s rows (keys: module docstring)."""
    metrics: dict[str, float] = {}
    by_key = {(r["case"], r["protocol"], r["variant"]): r for r in summary}
    for (case, protocol, variant), r in sorted(by_key.items()):
        sfx = suffix(variant, protocol)
        if not sfx:
            metrics[f"case{case}_soh_mape_measured_pct"] = r["soh_mape_measured_pct"]
            metrics[f"case{case}_soh_mape_measured_std_pct"] = r["soh_mape_measured_std_pct"]
        metrics[f"case{case}_soh_mape_generated_pct{sfx}"] = r["soh_mape_generated_pct"]
        metrics[f"case{case}_soh_mape_generated_std_pct{sfx}"] = r["soh_mape_generated_std_pct"]
        metrics[f"case{case}_generation_mape_pct{sfx}"] = r["generation_mape_pct"]
        metrics[f"case{case}_generation_kl{sfx}"] = r["generation_kl"]
        if r["num_seeds"] > 1:
            metrics[f"case{case}_soh_mape_generated_seed_std_pct{sfx}"] = r[
                "soh_mape_generated_seed_std_pct"
            ]

    def mean_over(cases, variant_of, protocol, field):
        vals = [
            by_key[(c, protocol, variant_of(c))][field]
            for c in cases
            if (c, protocol, variant_of(c)) in by_key
        ]
        return float(np.mean(vals)) if vals else None

    default = lambda c: "authors_shift" if c in EXTRAPOLATION_CASES else "direct"  # noqa: E731
    eq89 = lambda c: "eq89"  # noqa: E731
    for group, cases in (("interp", INTERPOLATION_CASES), ("extrap", EXTRAPOLATION_CASES)):
        for protocol in PROTOCOLS:
            variant_sets = [("", default)] + ([("_eq89", eq89)] if group == "extrap" else [])
            for vs, variant_of in variant_sets:
                sfx = vs + ("_honest" if protocol == "train" else "")
                for field in ("soh_mape_generated_pct", "generation_mape_pct", "generation_kl"):
                    v = mean_over(cases, variant_of, protocol, field)
                    if v is not None:
                        metrics[f"{group}_{field}{sfx}"] = v
        v = mean_over(cases, default, "test_rows", "soh_mape_measured_pct")
        if v is not None:
            metrics[f"{group}_soh_mape_measured_pct"] = v
    g = cfg.generation
    sel = suffix("eq89" if g.extrapolation == "eq89" else "authors_shift", g.soh_source)
    sel_interp = suffix("direct", g.soh_source)
    for group, sfx in (("interp", sel_interp), ("extrap", sel)):
        key = f"{group}_soh_mape_generated_pct{sfx}"
        if key in metrics:
            metrics[f"selected_{group}_soh_mape_generated_pct"] = metrics[key]
    return metrics

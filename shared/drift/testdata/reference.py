#!/usr/bin/env python3
"""Reference values for shared/drift's statistics, computed with SciPy.

Usage: reference.py CASES.json  (prints a JSON list, one result per case)

The Go tests write the cases (seeded samples, bin edges, categories) to a
temporary file, run this script and compare what it prints with what the
drift package computes from the same data. Needs numpy and scipy
(Debian: apt-get install python3-scipy).

Case kinds:
  numerical    reference, current (raw samples), edges (the profile's bin
               edges): ks_2samp (auto and asymp), wasserstein_distance and
               its norm (divided by max(np.std(reference), 0.001), like
               Evidently), PSI and Jensen-Shannon (base e) over the binned
               counts.
  categorical  reference, current (labels), categories (the profile's):
               counts over categories + __other__, chisquare against the
               smoothed reference proportions, Jensen-Shannon, PSI.
  kstwo        n, x (list): scipy.stats.kstwo.sf(x, n).
  chi2         df, x (list): scipy.stats.chi2.sf(x, df).
"""
import json
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

EPSILON = 1e-4  # Evidently's replacement for an empty bin's proportion
OTHER = "__other__"


def bin_counts(values, edges):
    """Counts over [under, inner bins..., over] with the drift package's
    rule: inner bins [e_i, e_i+1), the last one closed; one inner bin
    {e_0} when there is a single edge."""
    edges = np.asarray(edges, dtype=np.float64)
    k = len(edges) - 1
    inner = max(k, 1)
    counts = np.zeros(inner + 2, dtype=np.int64)
    for x in values:
        if x < edges[0]:
            counts[0] += 1
        elif x > edges[-1]:
            counts[-1] += 1
        else:
            j = int(np.searchsorted(edges, x, side="right"))
            counts[min(j, inner)] += 1
    return counts


def psi(ref_counts, cur_counts):
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    r = r / r.sum()
    c = c / c.sum()
    r = np.where(r == 0, EPSILON, r)
    c = np.where(c == 0, EPSILON, c)
    return float(np.sum((r - c) * np.log(r / c)))


def js(ref_counts, cur_counts):
    return float(distance.jensenshannon(np.asarray(ref_counts, dtype=np.float64),
                                        np.asarray(cur_counts, dtype=np.float64)))


def numerical(case):
    ref = np.asarray(case["reference"], dtype=np.float64)
    cur = np.asarray(case["current"], dtype=np.float64)
    auto = stats.ks_2samp(ref, cur, method="auto")
    asymp = stats.ks_2samp(ref, cur, method="asymp")
    w = stats.wasserstein_distance(ref, cur)
    norm = max(float(np.std(ref)), 0.001)
    rc = bin_counts(ref, case["edges"])
    cc = bin_counts(cur, case["edges"])
    return {
        "ks": float(auto.statistic),
        "ks_p": float(auto.pvalue),
        "ks_p_asymp": float(asymp.pvalue),
        "wasserstein": float(w),
        "wasserstein_norm": float(w / norm),
        "psi": psi(rc, cc),
        "js": js(rc, cc),
        "ref_counts": rc.tolist(),
        "cur_counts": cc.tolist(),
    }


def categorical(case):
    cats = list(case["categories"]) + [OTHER]
    index = {c: i for i, c in enumerate(cats)}

    def counts(labels):
        out = np.zeros(len(cats), dtype=np.float64)
        for v in labels:
            out[index.get(v, len(cats) - 1)] += 1
        return out

    rc, cc = counts(case["reference"]), counts(case["current"])
    # Expected proportions: the reference's, over bins seen on either
    # side, empty reference bins raised to EPSILON, renormalized.
    keep = (rc > 0) | (cc > 0)
    r = rc / rc.sum()
    r = np.where((r == 0) & (cc > 0), EPSILON, r)
    r = r[keep] / r[keep].sum()
    obs = cc[keep]
    if len(obs) < 2:
        chi, p = 0.0, 1.0
    else:
        res = stats.chisquare(obs, r * obs.sum())
        chi, p = float(res.statistic), float(res.pvalue)
    return {
        "chisquare": chi,
        "chisquare_p": p,
        "js": js(rc, cc),
        "psi": psi(rc, cc),
        "ref_counts": rc.tolist(),
        "cur_counts": cc.tolist(),
    }


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = []
    for case in cases:
        kind = case["kind"]
        if kind == "numerical":
            out.append(numerical(case))
        elif kind == "categorical":
            out.append(categorical(case))
        elif kind == "kstwo":
            out.append({"sf": [float(stats.kstwo.sf(x, case["n"])) for x in case["x"]]})
        elif kind == "chi2":
            out.append({"sf": [float(stats.chi2.sf(x, case["df"])) for x in case["x"]]})
        else:
            raise SystemExit("unknown case kind %r" % kind)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

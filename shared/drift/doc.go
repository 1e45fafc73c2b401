// Package drift detects data drift on edge devices and across fleets.
//
// At publish time, Build turns reference data (ReadFile: CSV or NPY of
// the model's pre-processed inputs and outputs) and a Schema into a
// Profile: per numerical feature quantile bin edges with the reference
// histogram, a bounded sorted reference sample and the mean, standard
// deviation and range; per categorical feature the category counts. The
// profile ships in the bundle as profile.json (fleetctl profile build).
//
// On the device, a Summary per time window records every prediction
// (Observe, ObserveMap, ObserveTensors, ObserveHealth) in memory bounded
// whatever the traffic: per feature a histogram over the profile's bins,
// a quantile sketch (a linear core around the reference mean and a
// DDSketch for the rest) and mergeable moments; per categorical feature
// counts per profile category plus OtherCategory. Summaries encode
// compactly (MarshalBinary, MarshalJSON, MarshalBase64JSON; DecodeSummary
// reads all three) and merge exactly (Merge), so fleetd can pool them per
// bundle, cohort or label without raw data leaving the devices.
//
// Compare tests a summary against its profile with Evidently's defaults:
// numerical features with a reference of at most 1,000 values use the
// two-sample Kolmogorov-Smirnov test (drift when p < 0.05), larger ones
// the Wasserstein distance divided by the reference standard deviation
// (drift when ≥ 0.1); categorical features use chi-squared (p < 0.05) or
// the Jensen-Shannon distance (≥ 0.1). The schema may override the test
// and threshold per feature; PSI and Jensen-Shannon are reported for
// every feature. Each statistic computed from a sketch comes with a
// rigorous error bound. CompareData is the exact counterpart on raw data.
//
// The statistics themselves are in package stats and match SciPy;
// docs/drift.md has the formats, the error bounds and measured sizes.
package drift

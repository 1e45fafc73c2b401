// Package stats holds the statistical tests drift detection runs: the
// two-sample Kolmogorov-Smirnov statistic and its p-value, the normed
// Wasserstein distance, the population stability index, the
// Jensen-Shannon distance and Pearson's chi-squared test.
//
// The functions follow SciPy's definitions so that results can be checked
// against it (shared/drift/testdata/reference.py does):
//
//   - KSPValue is scipy.stats.ks_2samp(method="auto"), two-sided: exact
//     when both samples have at most 10,000 points, else the asymptotic
//     kstwo.sf(D, round(n1·n2/(n1+n2))).
//   - KolmogorovSF is scipy.stats.kstwo.sf, the exact distribution of the
//     one-sample two-sided statistic D_n.
//   - JensenShannon is scipy.spatial.distance.jensenshannon with its
//     default natural-log base (the distance, not the divergence).
//   - ChiSquareSF is scipy.stats.chi2.sf.
//   - Wasserstein is scipy.stats.wasserstein_distance on unweighted
//     samples.
//
// Every function returns a finite number for any finite input it accepts;
// none returns NaN or ±Inf.
package stats

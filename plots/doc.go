// Package plots draws gvdb's figures with gonum/plot: line plots of query
// results over steps (one series per run, layer and statistic), the
// Gradient Clustering distortion-vs-K curve with the levels at which GC
// beats SG-B and SG-2B, histograms of per-example gradient norms, and
// cluster sizes over training. The file extension picks PNG, SVG or PDF.
//
// plots takes results, never the store: it imports query (the Result type)
// and db/stats (the Curve type) and gonum/plot.
package plots

package stats

// PeakHeap is peakHeap for the external benchmarks.
var PeakHeap = peakHeap

// RSS is the process's peak resident memory in bytes (Linux; 0 elsewhere).
func RSS() int64 { return peakRSS() }

// Subset is subset for the external tests.
var Subset = subset

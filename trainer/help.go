package trainer

// Help describes a training run and its snapshots, for gvdb train -h.
const Help = `Train a model with SGD (momentum, weight decay) and stream snapshots of its
per-example gradients into the store: every --snapshot-every steps,
--snapshot-examples training examples drawn at random (seeded, apart from
the training stream) at the current parameters, and every
--full-snapshot-every steps all training examples (the population the
paper's estimators sample; Gradient Clustering is measured on it exactly).
With --svrg-every S, an SVRG anchor θ̃ is refreshed every S steps and each
snapshot also stores its examples' gradients at θ̃ (svrg_variance,
svrg_nvar). Step scalars (loss, accuracy, lr, step time) are recorded
every step, test accuracy at snapshot steps and at the end. Ctrl-C stops
cleanly: what was captured is flushed and the run is marked interrupted.

With --snapshot-strata K, the samples are stratified for Gradient
Clustering's refit estimate: at each full snapshot at a multiple of
--snapshot-strata-every T the trainer fits K clusters (by
--snapshot-strata-method, exact or paper, as a query would), and each
later sample of --snapshot-examples draws 2 examples of every cluster (all
of a cluster of one), the rest in proportion to the clusters' remaining
sizes, and records each example's stratum, stratum_size and inclusion
probability. gc_variance(K, B, method, T) on these samples is then
unbiased. Samples before the first full snapshot would be uniform; gvdb
train takes one at step 0, so all are stratified. Other statistics of a
stratified sample (variance, nvar, ...) over-represent small clusters:
take them from the full snapshots.`

/* Baselines for the accuracy benchmark (issue 5): the diagnosers sagemesh is
 * compared with, behind one interface, so that the benchmark scores them on
 * exactly the windows it scores the model on.
 *
 * Every baseline learns from training windows without labels (the oracle
 * alone is then tuned on labelled windows), then ranks all the services of
 * a window, best culprit candidate first, and says whether it would raise an
 * alarm at all. Scores are NaN where a method has nothing to go on (no data
 * in the window, a service absent from training); such services are ranked
 * last, by name. Ties are broken by name, so rankings are deterministic.
 *
 *   BASELINE_AUTOSCALE_STRICT  a threshold autoscaler (Kubernetes HPA at a
 *       50% CPU target). Utilisation of a service = mean per-replica CPU
 *       rate in the window / cores of a replica. The window's metric
 *       container_cpu_usage_seconds_total is the per-second rate of each
 *       replica's counter, one observation per replica and scrape (the
 *       aggregator keeps series apart by instance), so its percentiles are
 *       over replicas x scrapes and are in cores; the mean is estimated from
 *       the percentiles (the integral of the quantile function, flat beyond
 *       p10 and p99.9), which is what HPA averages over pods. Cores are not
 *       in the telemetry: baseline_set_capacity() gives them (an HPA knows
 *       its pods' CPU requests); without it the capacity is the largest
 *       per-replica rate seen in training (p99.9 of any window), which makes
 *       the normal peak read as 100% and overstates utilisation. Flagged:
 *       utilisation > 0.5; ranked by utilisation (flagged services are then
 *       first); named = any flagged; resource cpu.
 *   BASELINE_AUTOSCALE_RELAX   the same at a 70% target.
 *   BASELINE_NSIGMA            per-service latency n-sigma: mean and standard
 *       deviation of the service's p99 server latency over the training
 *       windows; score (x - mean) / sd (sd floored at 0.1% of the mean);
 *       flagged at score > 3; named = any flagged; resource unknown.
 *   BASELINE_ROBUST            a median/IQR robust scorer over all of a
 *       service's features: its 8 latency percentiles and the 8 percentiles
 *       of every metric (per-link ones included). z = (x - median) / s with
 *       s = IQR / 1.349 (falling back to the standard deviation, then to
 *       0.1% of |median|, then 1e-9 for a feature constant in training);
 *       |z| is capped at 1e6. Score = max |z| over the features present;
 *       named when some score > 5 (BASELINE_ROBUST_NAMED_Z); resource = the
 *       class of the metric with the largest positive z (faults raise their
 *       own metric), unknown when no metric is above its median.
 *   BASELINE_ORACLE            an offline per-tier latency threshold: for each
 *       service a threshold on its p99 latency chosen on labelled windows to
 *       maximise the F1 of "x > threshold <=> this service is a culprit";
 *       score x / threshold; named = any score > 1; resource unknown. A
 *       service never a culprit in the labelled windows gets a threshold
 *       just above the largest p99 it showed there. It sees the labels of
 *       the windows it is scored on: an upper bound for per-tier threshold
 *       alerting, not a fair competitor. Before baseline_tune_oracle() it
 *       ranks nothing (all scores NaN, never named).
 *
 * Windows are borrowed for the duration of each call only; the baseline
 * copies the names it keeps. */
#ifndef SM_TESTS_BENCH_BASELINES_H
#define SM_TESTS_BENCH_BASELINES_H

#include <stddef.h>

#include "cbn/cbn.h"

enum baseline_kind {
    BASELINE_AUTOSCALE_STRICT,
    BASELINE_AUTOSCALE_RELAX,
    BASELINE_NSIGMA,
    BASELINE_ROBUST,
    BASELINE_ORACLE,
};
#define BASELINE_KINDS          5
#define BASELINE_ROBUST_NAMED_Z 5.0

/* "autoscale-strict", "autoscale-relax", "n-sigma", "robust-iqr",
 * "oracle-threshold". */
const char *baseline_name(enum baseline_kind kind);

struct baseline;

/* Learns from the @n training windows @w (labels are never used). Returns
 * SM_OK with a baseline owned by the caller (baseline_free) in @out,
 * SM_EINVAL for an unknown kind, or SM_ENOMEM. */
int baseline_train(enum baseline_kind kind,
                   const struct cbn_window *const *w,
                   size_t n,
                   struct baseline **out);

/* Autoscalers: sets the CPU capacity of one replica of @service, in cores,
 * overriding the proxy learned from training. Returns SM_OK, SM_ENOTFOUND
 * for a service absent from training, SM_EINVAL for cores <= 0, or
 * SM_ENOMEM. Ignored by the other kinds. */
int baseline_set_capacity(struct baseline *b,
                          const char *service,
                          double cores);

/* ORACLE only (SM_EINVAL for the others): chooses the per-service
 * thresholds on the @n labelled windows @w, @truth[i] naming the culprit of
 * @w[i] or NULL when it has none. A window with several culprits is passed
 * once per culprit (the same pointer several times): a service counts as a
 * culprit of a window when any entry for that window names it. Pass every
 * scored window, calm ones too (truth NULL): tuned on violated windows alone
 * the thresholds only need to separate culprits from their fellow victims,
 * and alarm on most calm windows. Returns SM_OK or SM_ENOMEM; may be
 * called again to retune. */
int baseline_tune_oracle(struct baseline *b,
                         const struct cbn_window *const *w,
                         const char *const *truth,
                         size_t n);

/* Ranks every service of @w, best culprit candidate first; writes up to @max
 * names (borrowed from @w) into @ranked and returns how many it wrote.
 * Stores in @named (if not NULL) whether the method raises an alarm for
 * this window. Returns 0 with *named = 0 on out of memory. */
size_t baseline_rank(const struct baseline *b,
                     const struct cbn_window *w,
                     const char **ranked,
                     size_t max,
                     int *named);

/* The resource class the method would blame on @service in @w: cpu for the
 * autoscalers, the top metric's class for the robust scorer, and
 * CBN_RES_UNKNOWN for the latency-only methods or without data. */
enum cbn_resource baseline_resource(const struct baseline *b,
                                    const struct cbn_window *w,
                                    const char *service);

/* The score of @service in @w (the value ranked on; NaN without data). */
double baseline_score(const struct baseline *b,
                      const struct cbn_window *w,
                      const char *service);

/* Frees @b; NULL is a no-op. */
void baseline_free(struct baseline *b);

/* A self-check on synthetic windows: returns 0 when every baseline finds
 * the planted culprit, else prints why to stderr and returns 1. */
int baseline_selfcheck(void);

#endif /* SM_TESTS_BENCH_BASELINES_H */

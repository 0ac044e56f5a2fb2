package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. Dashboards (deploy/) and alert rules refer to these.
const (
	NameIssueSeconds         = "mayfly_issue_duration_seconds"
	NameDecisions            = "mayfly_decisions_total"
	NameRevocations          = "mayfly_revocations_total"
	NameRevocationLagSeconds = "mayfly_revocation_lag_seconds"
	NameIrrevocable          = "mayfly_irrevocable_leases_total"
	NameRevokeRetries        = "mayfly_revocation_retries_total"
	NamePolicyReloads        = "mayfly_policy_reloads_total"
	NamePolicyLastReloadOK   = "mayfly_policy_last_reload_success"
	NamePolicyLoadedAt       = "mayfly_policy_loaded_timestamp_seconds"
)

// Metrics holds the broker's collectors. A nil *Metrics is valid and
// records nothing, so tests and tools need not wire one.
type Metrics struct {
	issueSeconds  *prometheus.HistogramVec
	decisions     *prometheus.CounterVec
	revocations   *prometheus.CounterVec
	revocationLag prometheus.Histogram
	irrevocable   prometheus.Counter
	retries       prometheus.Counter
	policyReloads *prometheus.CounterVec
	policyOK      prometheus.Gauge
	policyAt      prometheus.Gauge
}

// New creates the collectors and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		issueSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameIssueSeconds,
			Help:    "Time to handle IssueCredential, by result (ok, denied, invalid, unavailable, error).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameDecisions,
			Help: "Policy decisions by outcome (allow, deny, needs_approval).",
		}, []string{"outcome"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRevocations,
			Help: "Leases that reached a terminal state, by reason (expired, explicit, ...).",
		}, []string{"reason"}),
		revocationLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    NameRevocationLagSeconds,
			Help:    "Revoked-at minus due-at of each revoked lease.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300},
		}),
		irrevocable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameIrrevocable,
			Help: "Leases whose revocation failed every attempt. Alert on any increase.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameRevokeRetries,
			Help: "Failed revocation attempts that will be retried.",
		}),
		policyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NamePolicyReloads,
			Help: "Policy reloads by result (success, failure).",
		}, []string{"result"}),
		policyOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NamePolicyLastReloadOK,
			Help: "1 if the last policy reload succeeded, 0 if the broker runs on an older policy.",
		}),
		policyAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NamePolicyLoadedAt,
			Help: "Unix time the policy in force was loaded.",
		}),
	}
	reg.MustRegister(m.issueSeconds, m.decisions, m.revocations, m.revocationLag,
		m.irrevocable, m.retries, m.policyReloads, m.policyOK, m.policyAt)
	return m
}

// Issue records one IssueCredential call.
func (m *Metrics) Issue(result string, d time.Duration) {
	if m != nil {
		m.issueSeconds.WithLabelValues(result).Observe(d.Seconds())
	}
}

// Decision records one policy decision.
func (m *Metrics) Decision(outcome string) {
	if m != nil {
		m.decisions.WithLabelValues(outcome).Inc()
	}
}

// Revoked records a revoked lease and its revocation lag.
func (m *Metrics) Revoked(reason string, lag time.Duration) {
	if m != nil {
		m.revocations.WithLabelValues(reason).Inc()
		m.revocationLag.Observe(lag.Seconds())
	}
}

// Irrevocable records a lease that ended irrevocable.
func (m *Metrics) Irrevocable() {
	if m != nil {
		m.irrevocable.Inc()
		m.revocations.WithLabelValues("irrevocable").Inc()
	}
}

// Retry records a failed revocation attempt that will be retried.
func (m *Metrics) Retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// PolicyReload records a policy reload; err is nil on success.
func (m *Metrics) PolicyReload(err error, at time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.policyReloads.WithLabelValues("failure").Inc()
		m.policyOK.Set(0)
		return
	}
	m.policyReloads.WithLabelValues("success").Inc()
	m.policyOK.Set(1)
	m.policyAt.Set(float64(at.Unix()))
}

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
	NameLeases               = "mayfly_leases"
	NameRevocationsOverdue   = "mayfly_revocations_overdue"
	NameRequestsPending      = "mayfly_access_requests_pending"
	NameReviewsOverdue       = "mayfly_reviews_overdue"
	NameAuditEvents          = "mayfly_audit_events_total"
	NameAuditFailures        = "mayfly_audit_append_failures_total"
	NameAuditBacklog         = "mayfly_audit_backlog"
	NameStoreDataLoss        = "mayfly_lease_store_data_loss_total"
	NameRefusedCalls         = "mayfly_refused_calls_total"
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

	leases          *prometheus.GaugeVec
	overdue         prometheus.Gauge
	requestsPending prometheus.Gauge
	reviewsOverdue  prometheus.Gauge
	auditEvents     prometheus.Counter
	auditFailures   prometheus.Counter
	auditBacklog    prometheus.Gauge
	dataLoss        prometheus.Counter
	refused         *prometheus.CounterVec
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
		leases: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameLeases,
			Help: "Leases not yet over, by state (pending, active, revoking), as last counted.",
		}, []string{"state"}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRevocationsOverdue,
			Help: "Leases whose revocation is more than 2s late (a backend down, no revoker running). Alert when it stays above 0.",
		}),
		requestsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRequestsPending,
			Help: "Access requests waiting for approval.",
		}),
		reviewsOverdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameReviewsOverdue,
			Help: "Reviews past their deadline: standing grants not certified in time and break-glass uses not reviewed.",
		}),
		auditEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameAuditEvents,
			Help: "Audit events this replica appended to the trail.",
		}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameAuditFailures,
			Help: "Audit appends that failed; actions that must be audited were refused meanwhile. Alert on any increase.",
		}),
		auditBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameAuditBacklog,
			Help: "Audit events of things that happened regardless (revocations, refusals) waiting for the trail to come back.",
		}),
		dataLoss: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameStoreDataLoss,
			Help: "Times the lease store was found to have lost its data (Redis flushed, or restarted without persistence). Credentials minted before are bounded only by their native expiry. Alert on any increase.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRefusedCalls,
			Help: "Calls refused before their handler ran, by code (unauthenticated, resource_exhausted).",
		}, []string{"code"}),
	}
	reg.MustRegister(m.issueSeconds, m.decisions, m.revocations, m.revocationLag,
		m.irrevocable, m.retries, m.policyReloads, m.policyOK, m.policyAt,
		m.leases, m.overdue, m.requestsPending, m.reviewsOverdue, m.auditEvents, m.auditFailures,
		m.auditBacklog, m.dataLoss, m.refused)
	return m
}

// Leases sets the lease gauges from a count.
func (m *Metrics) Leases(pending, active, revoking, overdue int64) {
	if m != nil {
		m.leases.WithLabelValues("pending").Set(float64(pending))
		m.leases.WithLabelValues("active").Set(float64(active))
		m.leases.WithLabelValues("revoking").Set(float64(revoking))
		m.overdue.Set(float64(overdue))
	}
}

// Overdue sets the overdue-revocations gauge alone (a lease store that
// cannot count its leases by state).
func (m *Metrics) Overdue(n int64) {
	if m != nil {
		m.overdue.Set(float64(n))
	}
}

// Access sets the access gauges: requests waiting for approval and
// reviews past their deadline.
func (m *Metrics) Access(pending, overdueReviews int) {
	if m != nil {
		m.requestsPending.Set(float64(pending))
		m.reviewsOverdue.Set(float64(overdueReviews))
	}
}

// Audit records an audit append: ok, or failed.
func (m *Metrics) Audit(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.auditEvents.Inc()
	} else {
		m.auditFailures.Inc()
	}
}

// AuditBacklog sets how many audit events wait for the trail.
func (m *Metrics) AuditBacklog(n int) {
	if m != nil {
		m.auditBacklog.Set(float64(n))
	}
}

// StoreDataLoss records that the lease store lost its data.
func (m *Metrics) StoreDataLoss() {
	if m != nil {
		m.dataLoss.Inc()
	}
}

// Refused records a call refused before its handler ran.
func (m *Metrics) Refused(code string) {
	if m != nil {
		m.refused.WithLabelValues(code).Inc()
	}
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

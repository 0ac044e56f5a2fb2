package notify

import "time"

// Event types. They are stable: receivers route on them.
const (
	// EventRequestCreated: an access request waits for approval.
	EventRequestCreated = "request.created"
	// EventRequestApproved: a request got all its approvals (or was
	// approved at once) and its grant exists.
	EventRequestApproved = "request.approved"
	// EventRequestDenied: an approver (or policy, at the final approval)
	// denied a request.
	EventRequestDenied = "request.denied"
	// EventRequestExpired: a request was not decided within pending_ttl.
	EventRequestExpired = "request.expired"
	// EventBreakGlassUsed: someone granted themselves an entitlement in an
	// emergency; its review is due by Due.
	EventBreakGlassUsed = "break_glass.used"
	// EventReviewDue: a standing grant must be certified by Due.
	EventReviewDue = "review.due"
	// EventReviewOverdue: a standing grant lapsed for want of
	// certification, or a break-glass review is overdue (and the user may
	// not break glass again until it is done).
	EventReviewOverdue = "review.overdue"
)

// Event is what a webhook receives, as JSON (format json) or rendered as a
// Slack message (format slack). It never carries a credential or a
// secret; Reason and Ticket are what the requester wrote.
type Event struct {
	// ID is unique per event: receivers use it to drop a redelivery.
	ID string `json:"id"`
	// Type is one of the Event* constants.
	Type string `json:"type"`
	// At is when it happened.
	At time.Time `json:"at"`
	// Entitlement is the entitlement concerned.
	Entitlement string `json:"entitlement,omitempty"`
	// Subject is who the access is (or would be) for.
	Subject string `json:"subject,omitempty"`
	// Actor is who acted: the approver, the denier; empty for the broker.
	Actor string `json:"actor,omitempty"`
	// RequestID and GrantID link the event to the request and the grant.
	RequestID string `json:"request_id,omitempty"`
	GrantID   string `json:"grant_id,omitempty"`
	// Reason and Ticket are the requester's.
	Reason string `json:"reason,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	// Duration is the grant's length (Go syntax, "1h30m").
	Duration string `json:"duration,omitempty"`
	// Needed and Approvers say how many approvals are needed from whom
	// (request.created).
	Needed    int      `json:"needed,omitempty"`
	Approvers []string `json:"approvers,omitempty"`
	// Until is when the grant ends; Due is when a review is due.
	Until *time.Time `json:"until,omitempty"`
	Due   *time.Time `json:"due,omitempty"`
	// Message says it in one line, for people.
	Message string `json:"message"`
}

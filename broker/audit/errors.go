package audit

import "errors"

var (
	// ErrInvalid: the event cannot be recorded as given (missing type,
	// a reserved type, Seq/Prev/Hash set by the caller, invalid UTF-8, too
	// large). A caller bug; the message names the field.
	ErrInvalid = errors.New("audit: invalid event")
	// ErrSecret: a field of the event looks like a secret (a JWT, a PEM
	// block, "password=...", a long opaque token). The message names the
	// field and the shape, never the value.
	ErrSecret = errors.New("audit: value looks like a secret")
	// ErrSinkDown: a required sink did not take an event. The broker must
	// refuse the action the event records.
	ErrSinkDown = errors.New("audit: required sink unavailable")
	// ErrBufferFull: a buffered sink has been failing for so long that its
	// buffer is full; events are refused rather than dropped.
	ErrBufferFull = errors.New("audit: sink buffer full")
	// ErrChain: the chain (the shared head in Redis, or the in-process
	// head) could not order the event; nothing was recorded, unless the
	// error says the outcome is unknown.
	ErrChain = errors.New("audit: chain unavailable")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("audit: log closed")
	// ErrMalformed: a stored record could not be decoded as an event.
	ErrMalformed = errors.New("audit: malformed record")
	// ErrNotVerified: Trim refused because the range it would remove does
	// not verify (or ends at no signed checkpoint).
	ErrNotVerified = errors.New("audit: range not verified")
)

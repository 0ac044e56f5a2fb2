package policy

import (
	"fmt"
	"strings"
)

// maxErrors caps how many problems one load reports, so a file that is
// wrong everywhere (or not a policy at all) still gives a readable answer.
const maxErrors = 20

// Error is one problem in a policy file: where it is and what to fix.
// Loading reports every problem it finds, as an ErrorList of these, so an
// operator can fix a file in one pass; errors.As finds them.
type Error struct {
	// File is the path the policy was loaded from; empty for Parse.
	File string
	// Line is the 1-based line of the offending key or value; 0 when the
	// problem belongs to the file as a whole (empty file, unreadable).
	Line int
	// Msg says what is wrong, starting with the dotted path of the key
	// (entitlements.NAME.ttl) where there is one.
	Msg string
}

// Error formats the problem as "policy: FILE:LINE: MSG". Without a file
// name (Parse) it reads "policy: line LINE: MSG".
func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("policy: %s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return fmt.Sprintf("policy: %s: %s", e.File, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("policy: line %d: %s", e.Line, e.Msg)
	default:
		return "policy: " + e.Msg
	}
}

// ErrorList is every problem found in one policy file, in file order. It is
// the error Parse and LoadFile return when the file is invalid.
type ErrorList []*Error

// Error puts each problem on its own line.
func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As and errors.Is look at each problem.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Package accesstest is the conformance suite for access.Store. Every
// store runs it in one line from its own tests:
//
//	func TestConformance(t *testing.T) {
//		accesstest.Run(t, func(t *testing.T) access.Store { return memory.New() })
//	}
//
// Each subtest gets a fresh, empty store from newStore (a Redis store can
// flush a database or use a unique key prefix per call; register cleanup
// with t.Cleanup). Times are a fixed base plus offsets in whole
// milliseconds, compared with time.Time.Equal; ids come from lease.NewID;
// sentinels are matched with errors.Is.
//
// The suite pins down what the Store contract leaves open:
//
//   - Create* sets Version to 1 on the stored record and on the argument.
//   - Update* succeeds only when the argument's Version equals the stored
//     one, stores Version+1 and returns the stored record; under
//     concurrent updates from one version exactly one succeeds.
//   - Values returned are copies: changing them changes nothing stored.
//   - List* and Records return ascending ids after After, at most Limit
//     (access.PageLimit), filters ANDed.
//   - LatestCertifications picks the greatest At, then the greatest id.
//   - Mark keeps the first time stored for a key; Unmark removes it.
package accesstest

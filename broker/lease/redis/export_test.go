package redis

// RequestKey exposes the request key of (subject, request id) to tests.
func RequestKey(s *Store, subject, requestID string) string { return s.requestKey(subject, requestID) }

// SetAfterWriteHook sets the hook run between a Create's write and its
// confirmation; nil removes it.
func SetAfterWriteHook(f func(requestKey string)) { testHookAfterWrite = f }

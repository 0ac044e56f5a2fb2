// Package notify delivers access events (requests, approvals, denials,
// break-glass uses, reviews due and overdue) to the webhooks a policy
// names, signed so a receiver can trust them.
//
// Each delivery is a POST of JSON: the Event itself (format json), or a
// Slack-compatible {"text", "blocks"} message (format slack). The key is
// read from the environment variable the policy names (secret_env) at
// each send; it is never logged, and neither is a webhook's URL, which for
// Slack holds a token. Deliveries that fail with a network error, a
// timeout, 408, 429 or 5xx are retried with jittered exponential backoff,
// a bounded number of times; other statuses fail at once. Redirects are
// not followed.
//
//	sender, err := notify.New(notify.Config{
//		Webhooks: func() map[string]*policy.Webhook { return holder.Current().Webhooks },
//	})
//	svc, err := access.New(access.Config{..., Notify: sender.Send})
//
// # Verifying a delivery
//
// Every delivery carries X-Mayfly-Timestamp (Unix seconds) and
// X-Mayfly-Signature: "sha256=" followed by the hex HMAC-SHA256, keyed
// with the webhook's secret, of the timestamp, a ".", and the raw body.
// The timestamp is inside the signature, so a receiver that refuses
// timestamps older than a few minutes refuses replays; X-Mayfly-Delivery
// (the event id, the same on retries) lets it drop duplicates. In Go:
//
//	body, _ := io.ReadAll(r.Body)
//	err := notify.Verify(key, r.Header.Get("X-Mayfly-Timestamp"),
//		r.Header.Get("X-Mayfly-Signature"), body, time.Now(), 5*time.Minute)
//
// Elsewhere: compute HMAC-SHA256(key, timestamp + "." + body), hex-encode
// it, prefix "sha256=", compare in constant time, and check the timestamp.
package notify

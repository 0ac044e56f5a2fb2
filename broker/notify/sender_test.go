package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/notify"
	"github.com/mayflyhq/mayfly/broker/policy"
)

const secret = "s3cret-key-never-logged"

var now = time.Date(2030, 5, 6, 9, 0, 0, 0, time.UTC)

// receiver is a real HTTP server that verifies every delivery the way the
// package doc tells receivers to.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	hdrs   []http.Header
	status []int // statuses to answer with, in turn; then 200
	block  chan struct{}
}

func newReceiver(t *testing.T, status ...int) *receiver {
	rc := &receiver{t: t, status: status}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature), body, now, 0); err != nil {
			t.Errorf("delivery does not verify: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		rc.mu.Lock()
		rc.bodies = append(rc.bodies, body)
		rc.hdrs = append(rc.hdrs, r.Header.Clone())
		code := http.StatusOK
		if len(rc.status) > 0 {
			code, rc.status = rc.status[0], rc.status[1:]
		}
		block := rc.block
		rc.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.bodies)
}

type fixture struct {
	sender *notify.Sender
	sleeps []time.Duration
	logs   *bytes.Buffer
}

func newSender(t *testing.T, hooks map[string]*policy.Webhook, env map[string]string, client *http.Client) *fixture {
	f := &fixture{logs: &bytes.Buffer{}}
	s, err := notify.New(notify.Config{
		Webhooks:  func() map[string]*policy.Webhook { return hooks },
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Client:    client,
		Now:       func() time.Time { return now },
		Sleep: func(ctx context.Context, d time.Duration) error {
			f.sleeps = append(f.sleeps, d)
			return nil
		},
		Rand:   func() float64 { return 0.5 },
		Logger: slog.New(slog.NewTextHandler(f.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.sender = s
	return f
}

func event() notify.Event {
	due := now.Add(24 * time.Hour)
	return notify.Event{
		ID: "01qdg6y0m0tsan1bn2wt01jqwc", Type: notify.EventBreakGlassUsed, At: now, Entitlement: "db-admin", Subject: "user:oscar",
		Actor: "user:oscar", GrantID: "01qdg6y0m0tsan1bn2wt01jqwd", Reason: "DB down <!channel> & <https://evil.example|click>", Duration: "30m", Due: &due,
		Message: "BREAK-GLASS: user:oscar granted themselves db-admin <!here>",
	}
}

func hooks(url, format string) map[string]*policy.Webhook {
	return map[string]*policy.Webhook{"sec": {Name: "sec", URL: url, SecretEnv: "HOOK_KEY", Format: format}}
}

var env = map[string]string{"HOOK_KEY": secret}

func TestJSONDelivery(t *testing.T) {
	rc := newReceiver(t)
	f := newSender(t, hooks(rc.srv.URL+"/mayfly", policy.WebhookJSON), env, nil)
	if err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event()); err != nil {
		t.Fatal(err)
	}
	if rc.count() != 1 {
		t.Fatalf("%d deliveries", rc.count())
	}
	var got notify.Event
	if err := json.Unmarshal(rc.bodies[0], &got); err != nil {
		t.Fatal(err)
	}
	want := event()
	if got.ID != want.ID || got.Type != want.Type || got.Reason != want.Reason || !got.Due.Equal(*want.Due) || !got.At.Equal(want.At) {
		t.Errorf("event %+v", got)
	}
	h := rc.hdrs[0]
	if h.Get(notify.HeaderEvent) != notify.EventBreakGlassUsed || h.Get(notify.HeaderDelivery) != want.ID || h.Get("Content-Type") != "application/json" ||
		h.Get(notify.HeaderTimestamp) != "1904288400" || !strings.HasPrefix(h.Get(notify.HeaderSignature), "sha256=") {
		t.Errorf("headers %v", h)
	}
	if strings.Contains(f.logs.String(), secret) {
		t.Error("secret logged")
	}
}

func TestSlackDelivery(t *testing.T) {
	rc := newReceiver(t)
	f := newSender(t, hooks(rc.srv.URL, policy.WebhookSlack), env, nil)
	if err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event()); err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type   string          `json:"type"`
			Text   json.RawMessage `json:"text"`
			Fields []struct{ Text string }
		} `json:"blocks"`
	}
	if err := json.Unmarshal(rc.bodies[0], &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Text != "break_glass.used: BREAK-GLASS: user:oscar granted themselves db-admin &lt;!here&gt;" {
		t.Errorf("text %q", msg.Text)
	}
	if len(msg.Blocks) != 3 || msg.Blocks[0].Type != "section" || msg.Blocks[2].Type != "context" {
		t.Fatalf("blocks %s", rc.bodies[0])
	}
	// Text the requester wrote cannot ping the channel or forge a link.
	body := string(rc.bodies[0])
	if strings.Contains(body, "<!channel>") || strings.Contains(body, "<!here>") || strings.Contains(body, "<https://evil") {
		t.Errorf("unescaped markup: %s", body)
	}
	if !strings.Contains(body, `DB down \u0026lt;!channel\u0026gt; \u0026amp;`) {
		t.Errorf("reason not escaped: %s", body)
	}
}

func TestRetriesWithBackoff(t *testing.T) {
	rc := newReceiver(t, 503, 500, 429)
	f := newSender(t, hooks(rc.srv.URL, policy.WebhookJSON), env, nil)
	if err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event()); err != nil {
		t.Fatal(err)
	}
	if rc.count() != 4 {
		t.Fatalf("%d deliveries, want 4", rc.count())
	}
	// 500ms, 1s, 2s doubling, each at 50% + 0.5*Rand() = 75%.
	want := []time.Duration{375 * time.Millisecond, 750 * time.Millisecond, 1500 * time.Millisecond}
	if len(f.sleeps) != 3 || f.sleeps[0] != want[0] || f.sleeps[1] != want[1] || f.sleeps[2] != want[2] {
		t.Errorf("backoff %v, want %v", f.sleeps, want)
	}
	// Every retry is the same delivery.
	for _, h := range rc.hdrs {
		if h.Get(notify.HeaderDelivery) != rc.hdrs[0].Get(notify.HeaderDelivery) {
			t.Error("retry with another delivery id")
		}
	}
}

func TestRetriesAreBounded(t *testing.T) {
	rc := newReceiver(t, 500, 500, 500, 500, 500, 500, 500)
	f := newSender(t, hooks(rc.srv.URL, policy.WebhookJSON), env, nil)
	err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event())
	if err == nil || err.Error() != `notify: webhook "sec": event 01qdg6y0m0tsan1bn2wt01jqwc not delivered after 5 attempt(s): status 500` {
		t.Fatalf("error %v", err)
	}
	if rc.count() != 5 {
		t.Errorf("%d deliveries, want 5", rc.count())
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	rc := newReceiver(t, 400)
	f := newSender(t, hooks(rc.srv.URL, policy.WebhookJSON), env, nil)
	if err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event()); err == nil || !strings.HasSuffix(err.Error(), "after 1 attempt(s): status 400") {
		t.Fatalf("error %v", err)
	}
	if rc.count() != 1 || len(f.sleeps) != 0 {
		t.Errorf("%d deliveries, %d sleeps", rc.count(), len(f.sleeps))
	}
}

func TestTimeoutIsRetriedWithoutLeakingTheURL(t *testing.T) {
	rc := newReceiver(t)
	rc.block = make(chan struct{})
	defer close(rc.block)
	// A Slack-style URL whose path is a credential.
	url := rc.srv.URL + "/services/T000/B000/tokenXYZsecretpath"
	f := newSender(t, hooks(url, policy.WebhookSlack), env, &http.Client{Timeout: 50 * time.Millisecond})
	err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event())
	if err == nil || !strings.Contains(err.Error(), "not delivered after 5 attempt(s)") {
		t.Fatalf("error %v", err)
	}
	if rc.count() != 5 {
		t.Errorf("%d deliveries", rc.count())
	}
	for _, text := range []string{err.Error(), f.logs.String()} {
		if strings.Contains(text, "tokenXYZsecretpath") || strings.Contains(text, secret) {
			t.Errorf("URL or key leaked: %s", text)
		}
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	rc := newReceiver(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, rc.srv.URL, http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	f := newSender(t, hooks(redirect.URL, policy.WebhookJSON), env, nil)
	if err := f.sender.Send(context.Background(), []string{"webhook:sec"}, event()); err == nil || !strings.HasSuffix(err.Error(), "status 307") {
		t.Fatalf("error %v", err)
	}
	if rc.count() != 0 {
		t.Error("redirect followed")
	}
}

func TestConfigurationErrors(t *testing.T) {
	rc := newReceiver(t)
	f := newSender(t, hooks(rc.srv.URL, policy.WebhookJSON), map[string]string{}, nil)
	err := f.sender.Send(context.Background(), []string{"webhook:sec", "webhook:nope", "slack:sec"}, event())
	want := `notify: webhook "sec": environment variable HOOK_KEY (its signing key) is not set` + "\n" +
		`notify: webhook "nope" is not defined in the policy` + "\n" +
		`notify: target "slack:sec": want webhook:NAME`
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}
	if rc.count() != 0 {
		t.Error("delivered without a key")
	}
	if _, err := notify.New(notify.Config{}); err == nil || err.Error() != "notify: Config.Webhooks is required" {
		t.Errorf("New: %v", err)
	}
}

func TestCancelledContextStopsRetries(t *testing.T) {
	rc := newReceiver(t, 500, 500)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := notify.New(notify.Config{
		Webhooks:  func() map[string]*policy.Webhook { return hooks(rc.srv.URL, policy.WebhookJSON) },
		LookupEnv: func(string) (string, bool) { return secret, true },
		Now:       func() time.Time { return now },
		Sleep:     func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, []string{"webhook:sec"}, event()); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	if rc.count() != 1 {
		t.Errorf("%d deliveries", rc.count())
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	ts := "1904288400"
	sig := notify.Sign([]byte(secret), ts, body)
	for _, tc := range []struct {
		name          string
		ts, sig, body string
		at            time.Time
		want          string
	}{
		{"good", ts, sig, string(body), now, ""},
		{"other key", ts, notify.Sign([]byte("other"), ts, body), string(body), now, "notify: signature mismatch"},
		{"body changed", ts, sig, `{"id":"y"}`, now, "notify: signature mismatch"},
		{"timestamp changed", "1904288401", sig, string(body), now, "notify: signature mismatch"},
		{"replayed later", ts, sig, string(body), now.Add(6 * time.Minute), "notify: timestamp outside the tolerance (replayed or clock skew)"},
		{"from the future", ts, sig, string(body), now.Add(-6 * time.Minute), "notify: timestamp outside the tolerance (replayed or clock skew)"},
		{"bad timestamp", "soon", sig, string(body), now, "notify: bad timestamp"},
	} {
		err := notify.Verify([]byte(secret), tc.ts, tc.sig, []byte(tc.body), tc.at, 0)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

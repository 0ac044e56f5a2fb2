package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/policy"
)

// Headers of a delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed with the
	// webhook's secret, of the timestamp header's value, a ".", and the
	// body.
	HeaderSignature = "X-Mayfly-Signature"
	// HeaderTimestamp is the Unix time in seconds when the delivery was
	// signed; it is inside the signature, so a receiver that refuses old
	// timestamps refuses replays.
	HeaderTimestamp = "X-Mayfly-Timestamp"
	// HeaderEvent is the event type.
	HeaderEvent = "X-Mayfly-Event"
	// HeaderDelivery is the event id (the same on every retry).
	HeaderDelivery = "X-Mayfly-Delivery"
)

// DefaultTolerance is how old a timestamp Verify accepts by default.
const DefaultTolerance = 5 * time.Minute

// Config configures a Sender. Webhooks is required.
type Config struct {
	// Webhooks returns the webhooks of the policy in force, by name
	// (policy.Policy.Webhooks), read at every send so reloads apply.
	Webhooks func() map[string]*policy.Webhook
	// LookupEnv reads the environment variable holding a webhook's key;
	// os.LookupEnv if nil. It is read at every send, so a rotated key
	// applies at once.
	LookupEnv func(name string) (string, bool)
	// Client sends the requests; if nil, a client with a 10s timeout.
	// Redirects are never followed (a signed event goes only where the
	// policy says).
	Client *http.Client
	// Now is the clock for timestamps; time.Now if nil.
	Now func() time.Time
	// MaxAttempts bounds deliveries of one event to one webhook; 5 if 0.
	MaxAttempts int
	// Backoff is the first retry's delay; 500ms if 0. Each retry doubles
	// it, up to MaxBackoff (30s if 0), and waits a random 50-100% of it.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Sleep waits between retries; a timer that ctx cancels if nil.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a float in [0, 1) for jitter; math/rand/v2 if nil.
	Rand func() float64
	// Logger is the logger; slog.Default if nil. Neither the key nor a
	// webhook URL (Slack URLs hold a token) is ever logged.
	Logger *slog.Logger
}

// Sender delivers events to webhooks, signed and retried.
type Sender struct {
	cfg    Config
	logger *slog.Logger
}

// New validates cfg and returns a Sender.
func New(cfg Config) (*Sender, error) {
	if cfg.Webhooks == nil {
		return nil, errors.New("notify: Config.Webhooks is required")
	}
	if cfg.MaxAttempts < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 {
		return nil, errors.New("notify: Config.MaxAttempts, Backoff and MaxBackoff must not be negative")
	}
	if cfg.LookupEnv == nil {
		cfg.LookupEnv = os.LookupEnv
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	client := *cfg.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &client
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sender{cfg: cfg, logger: cfg.Logger.With("component", "notify")}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Send delivers ev to every target ("webhook:NAME"), one after another,
// and returns every failure, joined. It fits access.Config.Notify.
func (s *Sender) Send(ctx context.Context, targets []string, ev Event) error {
	var errs []error
	for _, target := range targets {
		if err := s.sendOne(ctx, target, ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// permanent marks a failure that retrying cannot fix.
type permanent struct{ error }

func (s *Sender) sendOne(ctx context.Context, target string, ev Event) error {
	name, ok := strings.CutPrefix(target, "webhook:")
	if !ok {
		return fmt.Errorf("notify: target %q: want webhook:NAME", target)
	}
	w := s.cfg.Webhooks()[name]
	if w == nil {
		return fmt.Errorf("notify: webhook %q is not defined in the policy", name)
	}
	key, ok := s.cfg.LookupEnv(w.SecretEnv)
	if !ok || key == "" {
		return fmt.Errorf("notify: webhook %q: environment variable %s (its signing key) is not set", name, w.SecretEnv)
	}
	body, err := Body(w.Format, ev)
	if err != nil {
		return fmt.Errorf("notify: webhook %q: %w", name, err)
	}
	delay := s.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, w, []byte(key), body, ev)
		if err == nil {
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) || attempt == s.cfg.MaxAttempts || ctx.Err() != nil {
			return fmt.Errorf("notify: webhook %q: event %s not delivered after %d attempt(s): %w", name, ev.ID, attempt, err)
		}
		wait := time.Duration(float64(delay) * (0.5 + 0.5*s.cfg.Rand()))
		s.logger.Warn("webhook delivery failed; retrying", "webhook", name, "event", ev.Type, "event_id", ev.ID, "attempt", attempt, "retry_in", wait.String(), "error", err.Error())
		if err := s.cfg.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("notify: webhook %q: event %s not delivered: %w", name, ev.ID, err)
		}
		delay = min(delay*2, s.cfg.MaxBackoff)
	}
}

// post makes one delivery attempt.
func (s *Sender) post(ctx context.Context, w *policy.Webhook, key, body []byte, ev Event) error {
	ts := strconv.FormatInt(s.cfg.Now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return permanent{errors.New("invalid webhook URL")} // never echo the URL: it may hold a token
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mayfly-webhook/1")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(key, ts, body))
	req.Header.Set(HeaderEvent, ev.Type)
	req.Header.Set(HeaderDelivery, ev.ID)
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		// url.Error carries the URL; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("status %d", resp.StatusCode)
	default:
		return permanent{fmt.Errorf("status %d", resp.StatusCode)}
	}
}

// Sign returns the HeaderSignature value for a body signed at timestamp
// (the HeaderTimestamp value).
func Sign(key []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a delivery as a receiver should: the signature matches
// (compared in constant time) and the timestamp is within tolerance of now
// (DefaultTolerance if 0), so a captured delivery cannot be replayed
// later. Receivers should also drop a HeaderDelivery id they have seen.
func Verify(key []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("notify: bad timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("notify: timestamp outside the tolerance (replayed or clock skew)")
	}
	if !hmac.Equal([]byte(signature), []byte(Sign(key, timestamp, body))) {
		return errors.New("notify: signature mismatch")
	}
	return nil
}

// Body renders an event for a webhook format: the Event as JSON, or a
// Slack message.
func Body(format string, ev Event) ([]byte, error) {
	switch format {
	case "", policy.WebhookJSON:
		return json.Marshal(ev)
	case policy.WebhookSlack:
		return json.Marshal(slackMessage(ev))
	}
	return nil, fmt.Errorf("unknown format %q", format)
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

// slackEscape escapes what Slack reads as markup, so text a requester
// wrote cannot mention @channel or forge links.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func slackMessage(ev Event) any {
	text := slackEscape(ev.Message)
	blocks := []slackBlock{{Type: "section", Text: &slackText{Type: "mrkdwn", Text: "*" + ev.Type + "*  " + text}}}
	var fields []slackText
	add := func(label, v string) {
		if v != "" {
			fields = append(fields, slackText{Type: "mrkdwn", Text: "*" + label + "*\n" + slackEscape(v)})
		}
	}
	add("Entitlement", ev.Entitlement)
	add("Subject", ev.Subject)
	add("By", ev.Actor)
	add("Reason", ev.Reason)
	add("Ticket", ev.Ticket)
	add("Duration", ev.Duration)
	if ev.Until != nil {
		add("Until", ev.Until.UTC().Format(time.RFC3339))
	}
	if ev.Due != nil {
		add("Due", ev.Due.UTC().Format(time.RFC3339))
	}
	if len(fields) > 0 {
		if len(fields) > 10 { // Slack's limit per section
			fields = fields[:10]
		}
		blocks = append(blocks, slackBlock{Type: "section", Fields: fields})
	}
	var ctx []string
	for _, kv := range [][2]string{{"request", ev.RequestID}, {"grant", ev.GrantID}, {"event", ev.ID}} {
		if kv[1] != "" {
			ctx = append(ctx, kv[0]+" "+slackEscape(kv[1]))
		}
	}
	blocks = append(blocks, slackBlock{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: strings.Join(ctx, " · ")}}})
	return struct {
		Text   string       `json:"text"`
		Blocks []slackBlock `json:"blocks"`
	}{Text: ev.Type + ": " + text, Blocks: blocks}
}

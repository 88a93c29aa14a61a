package alert

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Sender delivers one message to people: an SMS, an e-mail, a webhook.
//
// Send must honour ctx: return promptly, with an error, once ctx is done.
// It returns nil only when the message was accepted for delivery. It
// returns an error wrapping ErrPermanent for failures that retrying cannot
// fix (bad number, bad credentials); any other error is retried with backoff,
// so Send may see the same Message (same ID) more than once. Send is called
// from one goroutine at a time.
type Sender interface {
	// Name is a short name for logs and status ("twilio", "log").
	Name() string
	Send(ctx context.Context, m Message) error
}

// Message is one alert.
type Message struct {
	// ID is unique per alert and stable across retries and restarts.
	ID string `json:"id"`
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	// Text is the human-readable message, short enough for one SMS segment
	// where possible.
	Text string `json:"text"`
	// Detail is the whole story for channels without SMS's length limit
	// (e-mail): Text's facts uncut, and more where the alerter has more to
	// say. It may equal Text, and is empty in alerts spooled by versions
	// before it existed: a Sender that uses it falls back to Text.
	Detail string `json:"detail,omitempty"`
	// Created is when the event happened.
	Created time.Time `json:"created"`
}

// Alert kinds.
const (
	KindLogin       = "login"
	KindAgentDown   = "agent_down"
	KindAgentBack   = "agent_back"
	KindLinkFailed  = "link_failed"
	KindLinkOK      = "link_ok"
	KindNameMoved   = "name_moved"
	KindAuthFailed  = "auth_failed"
	KindSummary     = "summary"
	KindQuietLogin  = "quiet_login" // audited only, never texted
	KindUndelivered = "undelivered" // audit reason: a permanent failure
)

// ErrPermanent marks delivery failures that retrying cannot fix. Senders
// wrap it; the Alerter then sets the alert aside instead of retrying.
var ErrPermanent = errors.New("permanent delivery failure")

// NewLogSender returns a Sender that writes each message to log at
// warning level and always succeeds: the fallback when no SMS credentials
// are configured. log must not be nil.
func NewLogSender(log *slog.Logger) Sender { return logSender{log: log} }

type logSender struct{ log *slog.Logger }

func (logSender) Name() string { return "log" }

func (n logSender) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.log.Warn("alert (not texted: no SMS configured)", "id", m.ID, "kind", m.Kind, "text", m.Text)
	return nil
}

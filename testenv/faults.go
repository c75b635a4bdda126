package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// FaultMode selects how a server behind a Faults controller misbehaves.
type FaultMode int

const (
	// FaultNone passes every request through.
	FaultNone FaultMode = iota
	// FaultRefuse closes the connection as soon as a request arrives,
	// without any response: the client sees EOF or a connection reset, as
	// with a crashed server or a dropping firewall. (It is not a 503; use
	// FaultError5xx for that.)
	FaultRefuse
	// FaultHang holds every request without answering until the fault is
	// changed (the request then proceeds under the new mode), the client gives
	// up (request context ends), or the server is closed.
	FaultHang
	// FaultError5xx answers every request with an error status, alternating
	// 500 (InternalError) and 503 (SlowDown / backend unavailable), which
	// clients treat as retryable.
	FaultError5xx
	// FaultCorrupt flips the first byte of the body of successful GET
	// responses that carry object data (not XML or JSON API documents), as
	// a bad disk or middlebox would.
	FaultCorrupt
	// FaultCorruptUpload inverts the middle byte of the body of every
	// upload request before the server reads it, so a server that verifies
	// upload checksums must reject the upload. Upload requests are PUTs
	// (S3 objects and parts) and POSTs whose Content-Type is set and is
	// neither XML nor JSON (GCS media and multipart/related uploads); API
	// documents pass untouched.
	FaultCorruptUpload
	// FaultDenied answers every request with 403 Forbidden
	// (AccessDenied), as for wrong or revoked credentials.
	FaultDenied
)

// String returns the mode's name.
func (m FaultMode) String() string {
	switch m {
	case FaultNone:
		return "none"
	case FaultRefuse:
		return "refuse"
	case FaultHang:
		return "hang"
	case FaultError5xx:
		return "error5xx"
	case FaultCorrupt:
		return "corrupt"
	case FaultCorruptUpload:
		return "corrupt-upload"
	case FaultDenied:
		return "denied"
	}
	return fmt.Sprintf("FaultMode(%d)", int(m))
}

// faultFlavor picks the error document style of injected errors.
type faultFlavor int

const (
	flavorPlain faultFlavor = iota
	flavorS3
	flavorGCS
)

// Faults injects failures into an HTTP server. The zero value is not
// usable; call NewFaults. Methods are safe for concurrent use.
type Faults struct {
	mu      sync.Mutex
	mode    FaultMode
	skip    int           // requests to let through before the mode applies
	left    int           // requests the mode still applies to; <0: unlimited
	changed chan struct{} // closed (and replaced) on every change

	requests atomic.Int64
	injected atomic.Int64
	n5xx     atomic.Int64
}

// NewFaults returns a controller in FaultNone mode.
func NewFaults() *Faults {
	return &Faults{left: -1, changed: make(chan struct{})}
}

// SetFault switches to mode m for every following request until changed.
// Requests held by FaultHang proceed under the new mode.
func (f *Faults) SetFault(m FaultMode) { f.set(0, m, -1) }

// SetFaultN applies mode m to the next n requests only, then returns to
// FaultNone: SetFaultN(FaultError5xx, 2) makes a client that retries at
// least twice succeed. A request held by FaultHang counts once.
func (f *Faults) SetFaultN(m FaultMode, n int) {
	if n <= 0 {
		m, n = FaultNone, -1
	}
	f.set(0, m, n)
}

// SetFaultAfter lets the next skip requests through, then applies mode m
// to n requests (n <= 0: until changed), then returns to FaultNone. It
// reaches the middle of a sequence: SetFaultAfter(1, FaultError5xx, 1)
// fails the first chunk of a resumable upload but not its start.
// Fault reports FaultNone while requests are being skipped.
func (f *Faults) SetFaultAfter(skip int, m FaultMode, n int) {
	if n <= 0 {
		n = -1
	}
	f.set(max(skip, 0), m, n)
}

func (f *Faults) set(skip int, m FaultMode, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode, f.left, f.skip = m, n, skip
	close(f.changed)
	f.changed = make(chan struct{})
}

// Fault returns the mode the next request gets.
func (f *Faults) Fault() FaultMode {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.skip > 0 {
		return FaultNone
	}
	return f.mode
}

// Requests returns how many requests reached the wrapper so far.
func (f *Faults) Requests() int64 { return f.requests.Load() }

// Injected returns how many requests a fault was applied to so far.
func (f *Faults) Injected() int64 { return f.injected.Load() }

// take returns the mode for a new request, consuming one use of a counted
// fault, and the channel that is closed on the next change.
func (f *Faults) take() (FaultMode, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.skip > 0 {
		f.skip--
		return FaultNone, f.changed
	}
	m := f.mode
	if f.left > 0 {
		f.left--
		if f.left == 0 {
			f.mode, f.left = FaultNone, -1
		}
	}
	return m, f.changed
}

// current is the mode for a request held by FaultHang after a change; it
// consumes neither skips nor counted uses.
func (f *Faults) current() (FaultMode, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.skip > 0 {
		return FaultNone, f.changed
	}
	return f.mode, f.changed
}

// Wrap returns h behind the fault injector, with plain-text error bodies.
// Requests held by FaultHang keep an httptest.Server's Close waiting: clear
// the fault first. StartS3 and StartGCS wrap their servers themselves, with
// error bodies in each API's format, and release held requests on Close.
func (f *Faults) Wrap(h http.Handler) http.Handler { return f.wrap(h, flavorPlain, nil) }

// wrap puts h behind the injector; closing stop ends every hang (with a 503).
func (f *Faults) wrap(h http.Handler, flavor faultFlavor, stop <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		mode, changed := f.take()
		if mode != FaultNone {
			f.injected.Add(1)
		}
		for mode == FaultHang {
			select {
			case <-changed:
				mode, changed = f.current()
			case <-r.Context().Done():
				return
			case <-stop:
				writeFault(w, flavor, http.StatusServiceUnavailable)
				return
			}
		}
		switch mode {
		case FaultRefuse:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler) // closes the connection, unlogged
		case FaultError5xx:
			status := http.StatusInternalServerError
			if f.n5xx.Add(1)%2 == 0 {
				status = http.StatusServiceUnavailable
			}
			writeFault(w, flavor, status)
		case FaultDenied:
			writeFault(w, flavor, http.StatusForbidden)
		case FaultCorrupt:
			if r.Method == http.MethodGet {
				w = &corruptingWriter{ResponseWriter: w}
			}
			h.ServeHTTP(w, r)
		case FaultCorruptUpload:
			ct := r.Header.Get("Content-Type")
			upload := r.Method == http.MethodPut || (r.Method == http.MethodPost &&
				ct != "" && !strings.Contains(ct, "xml") && !strings.Contains(ct, "json"))
			if upload && r.ContentLength > 0 {
				r.Body = &corruptingBody{ReadCloser: r.Body, at: r.ContentLength / 2}
			} else if upload && r.ContentLength < 0 {
				// Unknown length: read it all to find the middle.
				b, err := io.ReadAll(r.Body)
				r.Body.Close()
				if err != nil {
					return
				}
				if len(b) > 0 {
					b[len(b)/2] ^= 0xff
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
			h.ServeHTTP(w, r)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// writeFault writes an injected error response in the API's own format.
func writeFault(w http.ResponseWriter, flavor faultFlavor, status int) {
	var code, msg string
	switch status {
	case http.StatusForbidden:
		code, msg = "AccessDenied", "Access Denied (injected fault)"
	case http.StatusServiceUnavailable:
		code, msg = "SlowDown", "Please reduce your request rate (injected fault)"
	default:
		code, msg = "InternalError", "We encountered an internal error (injected fault)"
	}
	switch flavor {
	case flavorS3:
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
	case flavorGCS:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"errors":[{"reason":%q,"message":%q}]}}`, status, msg, code, msg)
	default:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s: %s\n", code, msg)
	}
}

// corruptingWriter flips the first body byte of a 2xx response that is not
// an XML or JSON document.
type corruptingWriter struct {
	http.ResponseWriter
	status  int
	decided bool
	flip    bool
}

func (c *corruptingWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if !c.decided {
		c.decided = true
		status := c.status
		if status == 0 {
			status = http.StatusOK
		}
		ct := c.Header().Get("Content-Type")
		if ct == "" {
			ct = http.DetectContentType(p) // what net/http will send
		}
		c.flip = status >= 200 && status < 300 && !strings.Contains(ct, "xml") && !strings.Contains(ct, "json")
	}
	if c.flip && len(p) > 0 {
		c.flip = false
		q := make([]byte, len(p))
		copy(q, p)
		q[0] ^= 0xff
		return c.ResponseWriter.Write(q)
	}
	return c.ResponseWriter.Write(p)
}

// Flush lets streaming handlers flush through the wrapper.
func (c *corruptingWriter) Flush() {
	if fl, ok := c.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// corruptingBody inverts the byte at offset at of a request body.
type corruptingBody struct {
	io.ReadCloser
	at, off int64
}

func (c *corruptingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if i := c.at - c.off; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	c.off += int64(n)
	return n, err
}

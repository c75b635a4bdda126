package testenv_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
)

// faultServer serves "payload" on GET and echoes PUT/POST bodies, behind
// a fault controller.
func faultServer(t *testing.T) (*testenv.Faults, *httptest.Server) {
	t.Helper()
	f := testenv.NewFaults()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			if r.URL.Path == "/doc.xml" {
				io.WriteString(w, `<?xml version="1.0"?><a/>`)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, "payload")
		default:
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}
	})
	srv := httptest.NewServer(f.Wrap(h))
	t.Cleanup(func() {
		f.SetFault(testenv.FaultNone) // release hangs before Close waits for them
		srv.Close()
	})
	return f, srv
}

func do(t *testing.T, ctx context.Context, method, u, body, ctype string) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestFaultModes(t *testing.T) {
	ctx := context.Background()
	f, srv := faultServer(t)

	if code, body, err := do(t, ctx, "GET", srv.URL, "", ""); err != nil || code != 200 || body != "payload" {
		t.Fatalf("FaultNone: %d %q %v", code, body, err)
	}

	f.SetFault(testenv.FaultRefuse)
	if _, _, err := do(t, ctx, "GET", srv.URL, "", ""); err == nil {
		t.Error("FaultRefuse: request succeeded")
	}

	f.SetFault(testenv.FaultError5xx)
	var codes []int
	for range 4 {
		code, _, err := do(t, ctx, "GET", srv.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, code)
	}
	if codes[0]+codes[1] != 1003 || codes[2]+codes[3] != 1003 || codes[0] == codes[1] {
		t.Errorf("FaultError5xx codes = %v, want alternating 500 and 503", codes)
	}

	f.SetFault(testenv.FaultDenied)
	if code, _, _ := do(t, ctx, "GET", srv.URL, "", ""); code != 403 {
		t.Errorf("FaultDenied: status %d", code)
	}

	f.SetFault(testenv.FaultCorrupt)
	if _, body, _ := do(t, ctx, "GET", srv.URL, "", ""); body == "payload" || body[1:] != "ayload" {
		t.Errorf("FaultCorrupt GET body = %q, want the first byte flipped", body)
	}
	if _, body, _ := do(t, ctx, "GET", srv.URL+"/doc.xml", "", ""); !strings.HasPrefix(body, "<?xml") {
		t.Errorf("FaultCorrupt altered an XML document: %q", body)
	}
	if _, body, _ := do(t, ctx, "PUT", srv.URL, "upload", ""); body != "upload" {
		t.Errorf("FaultCorrupt altered an upload: %q", body)
	}

	f.SetFault(testenv.FaultCorruptUpload)
	if _, body, _ := do(t, ctx, "PUT", srv.URL, "abcdef", ""); body == "abcdef" || body[:3] != "abc" || body[4:] != "ef" {
		t.Errorf("FaultCorruptUpload PUT echoed %q, want the middle byte flipped", body)
	}
	if _, body, _ := do(t, ctx, "POST", srv.URL, "abcdef", "application/octet-stream"); body == "abcdef" {
		t.Errorf("FaultCorruptUpload left a media POST alone")
	}
	if _, body, _ := do(t, ctx, "POST", srv.URL, `{"a":1}`, "application/json"); body != `{"a":1}` {
		t.Errorf("FaultCorruptUpload altered a JSON document: %q", body)
	}
	if _, body, _ := do(t, ctx, "GET", srv.URL, "", ""); body != "payload" {
		t.Errorf("FaultCorruptUpload altered a download: %q", body)
	}

	f.SetFault(testenv.FaultNone)
	if f.Fault() != testenv.FaultNone || f.Injected() == 0 || f.Requests() < f.Injected() {
		t.Errorf("counters: requests %d injected %d", f.Requests(), f.Injected())
	}
}

func TestFaultHang(t *testing.T) {
	f, srv := faultServer(t)
	f.SetFault(testenv.FaultHang)

	// The client's deadline ends the request.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, _, err := do(t, ctx, "GET", srv.URL, "", "")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung request = %v, want DeadlineExceeded", err)
	}

	// A request that arrived is held until the fault is cleared, then
	// goes through.
	type reply struct {
		code int
		body string
		err  error
	}
	before := f.Requests()
	got := make(chan reply, 1)
	go func() {
		code, body, err := do(t, context.Background(), "GET", srv.URL, "", "")
		got <- reply{code, body, err}
	}()
	for f.Requests() == before {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case r := <-got:
		t.Fatalf("request was not held: %d %q %v", r.code, r.body, r.err)
	default:
	}
	f.SetFault(testenv.FaultNone)
	if r := <-got; r.err != nil || r.code != 200 || r.body != "payload" {
		t.Fatalf("after clearing: %d %q %v", r.code, r.body, r.err)
	}
}

func TestFaultN(t *testing.T) {
	ctx := context.Background()
	f, srv := faultServer(t)
	f.SetFaultN(testenv.FaultError5xx, 2)
	for i, want := range []int{500, 503, 200, 200} {
		if code, _, _ := do(t, ctx, "GET", srv.URL, "", ""); code != want {
			t.Errorf("request %d: status %d, want %d", i, code, want)
		}
	}
	if f.Fault() != testenv.FaultNone {
		t.Errorf("mode after the counted faults: %v", f.Fault())
	}
	f.SetFaultAfter(1, testenv.FaultDenied, 1)
	if f.Fault() != testenv.FaultNone {
		t.Errorf("Fault() while skipping = %v", f.Fault())
	}
	for i, want := range []int{200, 403, 200} {
		if code, _, _ := do(t, ctx, "GET", srv.URL, "", ""); code != want {
			t.Errorf("SetFaultAfter request %d: status %d, want %d", i, code, want)
		}
	}
	if s := testenv.FaultCorruptUpload.String(); s != "corrupt-upload" {
		t.Errorf("String() = %q", s)
	}
}

// TestServersCloseWhileHanging: Close must not wait for held requests.
func TestServersCloseWhileHanging(t *testing.T) {
	ctx := context.Background()
	s3srv, err := testenv.StartS3(ctx, testenv.S3Options{Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	gcs, err := testenv.StartGCS(ctx, testenv.GCSOptions{Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url   string
		f     *testenv.Faults
		close func()
	}{
		{s3srv.URL("b", "p"), s3srv.Faults, s3srv.Close},
		{gcs.URL("b", "p"), gcs.Faults, gcs.Close},
	} {
		st, err := store.Open(ctx, tc.url+"&max_attempts=1", zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		tc.f.SetFault(testenv.FaultHang)
		done := make(chan error, 1)
		go func() { _, err := st.Get(ctx, "k"); done <- err }()
		for tc.f.Injected() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		closed := make(chan struct{})
		go func() { tc.close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Close blocked on a held request", tc.url)
		}
		if err := <-done; err == nil {
			t.Errorf("%s: Get on a closed server succeeded", tc.url)
		}
		tc.close() // idempotent
		st.Close()
	}
}

func TestS3Server(t *testing.T) {
	ctx := context.Background()
	srv := testenv.NewS3(t)
	raw := srv.URL("bkt", "/a/b/")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "s3" || u.Host != "bkt" || u.Path != "/a/b" || q.Get("endpoint") != srv.Endpoint() ||
		q.Get("region") != testenv.S3Region || q.Get("path_style") != "true" ||
		q.Get("access_key_id") != srv.AccessKeyID() || q.Get("secret_access_key") != srv.SecretAccessKey() {
		t.Fatalf("URL = %s", raw)
	}
	if !strings.HasPrefix(srv.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("Endpoint = %s", srv.Endpoint())
	}
	if err := srv.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatalf("second CreateBucket: %v", err)
	}
	st, err := store.Open(ctx, raw, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "k", bytes.NewReader([]byte("hello")), 5); err != nil {
		t.Fatal(err)
	}
	if b, err := srv.ReadObject(ctx, "bkt", "a/b/k"); err != nil || string(b) != "hello" {
		t.Fatalf("ReadObject = %q, %v", b, err)
	}
	if err := srv.CorruptObject(ctx, "bkt", "a/b/k"); err != nil {
		t.Fatal(err)
	}
	if b, _ := srv.ReadObject(ctx, "bkt", "a/b/k"); string(b) != "he\x93lo" {
		t.Fatalf("after CorruptObject: %q", b)
	}
	if err := srv.CorruptObject(ctx, "bkt", "missing"); err == nil {
		t.Fatal("CorruptObject of a missing object succeeded")
	}
	if err := srv.DeleteObject(ctx, "bkt", "a/b/k"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after DeleteObject = %v", err)
	}
	if err := srv.DeleteObject(ctx, "bkt", "a/b/k"); err != nil {
		t.Fatalf("DeleteObject of a missing object: %v", err)
	}
}

func TestS3ServerCredentials(t *testing.T) {
	ctx := context.Background()
	srv, err := testenv.StartS3(ctx, testenv.S3Options{AccessKeyID: "AKIDTEST", SecretAccessKey: "s3cr3t", Buckets: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.Contains(srv.URL("b", ""), "access_key_id=AKIDTEST") {
		t.Fatalf("URL = %s", srv.URL("b", ""))
	}
	good, err := store.Open(ctx, srv.URL("b", ""), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := good.Check(ctx); err != nil {
		t.Fatal(err)
	}
	bad, err := store.Open(ctx, strings.Replace(srv.URL("b", ""), "AKIDTEST", "OTHER", 1), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Check(ctx); err == nil || !strings.Contains(err.Error(), "credentials rejected") {
		t.Fatalf("Check with another access key = %v", err)
	}
	// Unsigned requests are refused too.
	resp, err := http.Get(srv.Endpoint() + "/b/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous request: status %d", resp.StatusCode)
	}
}

func TestGCSServer(t *testing.T) {
	ctx := context.Background()
	srv := testenv.NewGCS(t)
	raw := srv.URL("bkt", "a/b")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "gs" || u.Host != "bkt" || u.Path != "/a/b" || u.Query().Get("endpoint") != srv.Endpoint() {
		t.Fatalf("URL = %s", raw)
	}
	if err := srv.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatalf("second CreateBucket: %v", err)
	}
	st, err := store.Open(ctx, raw, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "k", bytes.NewReader([]byte("hello")), 5); err != nil {
		t.Fatal(err)
	}
	if b, err := store.ReadAll(ctx, st, "k"); err != nil || string(b) != "hello" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if err := srv.CorruptObject(ctx, "bkt", "a/b/k"); err != nil {
		t.Fatal(err)
	}
	if b, _ := srv.ReadObject(ctx, "bkt", "a/b/k"); string(b) != "he\x93lo" {
		t.Fatalf("after CorruptObject: %q", b)
	}
	// The stored CRC32C is the original's: the client notices.
	if _, err := store.ReadAll(ctx, st, "k"); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("read of a corrupted object = %v, want a CRC error", err)
	}
	if err := srv.CorruptObject(ctx, "bkt", "missing"); err == nil {
		t.Fatal("CorruptObject of a missing object succeeded")
	}
	if err := srv.DeleteObject(ctx, "bkt", "a/b/k"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after DeleteObject = %v", err)
	}
	if err := srv.DeleteObject(ctx, "bkt", "a/b/k"); err != nil {
		t.Fatalf("DeleteObject of a missing object: %v", err)
	}
}

package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/store/storetest"
	"github.com/wayback-pitr/wayback/testenv"
)

// gcsFastRetry keeps retry tests quick: 3 tries, at most 20 ms apart.
const gcsFastRetry = "&max_attempts=3&max_backoff=20ms"

func openGCS(t *testing.T, rawURL string) *store.GCS {
	t.Helper()
	st, err := store.Open(context.Background(), rawURL, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", rawURL, err)
	}
	t.Cleanup(func() { st.Close() })
	g, ok := st.(*store.GCS)
	if !ok {
		t.Fatalf("Open(gs://...) returned %T", st)
	}
	// Small chunks: multi-MiB objects go up in several resumable requests.
	g.ChunkSize = 256 << 10
	return g
}

func TestGCSConformance(t *testing.T) {
	srv := testenv.NewGCS(t)
	var n atomic.Int32
	storetest.Run(t, func(t *testing.T) store.Store {
		bucket := fmt.Sprintf("conf-%d", n.Add(1))
		if err := srv.CreateBucket(context.Background(), bucket); err != nil {
			t.Fatal(err)
		}
		st, err := store.Open(context.Background(), srv.URL(bucket, "archive/db1"), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		st.(*store.GCS).ChunkSize = 256 << 10
		return st
	})
}

func TestGCSPrefixIsolation(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srv := testenv.NewGCS(t)
	if err := srv.CreateBucket(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	root := openGCS(t, srv.URL("shared", ""))
	a := openGCS(t, srv.URL("shared", "db/a"))
	ab := openGCS(t, srv.URL("shared", "db/ab/"))
	storetest.MustPut(t, ctx, a, "k", []byte("a"))
	storetest.MustPut(t, ctx, ab, "k", []byte("ab"))
	storetest.CheckGet(t, ctx, a, "k", []byte("a"))
	if got := storetest.MustList(t, ctx, a, ""); len(got) != 1 || got[0].Key != "k" {
		t.Fatalf("List in prefix db/a = %+v, want just k", got)
	}
	var all []string
	for _, o := range storetest.MustList(t, ctx, root, "") {
		all = append(all, o.Key)
	}
	if strings.Join(all, ",") != "db/a/k,db/ab/k" {
		t.Fatalf("List at bucket root = %q", all)
	}
}

func TestGCSCheck(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := testenv.NewGCS(t)
	if err := srv.CreateBucket(ctx, "exists"); err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		if err := openGCS(t, srv.URL("exists", "p")).Check(ctx); err != nil {
			t.Fatal(err)
		}
	})
	cases := []struct {
		name, url string
		fault     testenv.FaultMode
		want      []string
	}{
		{"MissingBucket", srv.URL("nope", "p"), testenv.FaultNone,
			[]string{`bucket "nope" does not exist at ` + srv.Endpoint(), "create it or fix the store URL"}},
		// fake-gcs-server checks no credentials: a 403 is injected instead.
		{"AccessDenied", srv.URL("exists", "p"), testenv.FaultDenied,
			[]string{"credentials rejected by " + srv.Endpoint(), "GOOGLE_APPLICATION_CREDENTIALS"}},
		{"Unreachable", "gs://exists/p?endpoint=http://" + closedPort(t) + gcsFastRetry, testenv.FaultNone,
			[]string{"cannot reach http://127.0.0.1:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := openGCS(t, tc.url)
			srv.Faults.SetFault(tc.fault)
			defer srv.Faults.SetFault(testenv.FaultNone)
			err := g.Check(ctx)
			if err == nil {
				t.Fatal("Check succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestGCSFaults(t *testing.T) {
	ctx := testCtx(t, 40*time.Second)
	srv := testenv.NewGCS(t)
	if err := srv.CreateBucket(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	g := openGCS(t, srv.URL("f", "p")+gcsFastRetry)
	data := storetest.Data(9, 100_000)
	big := storetest.Data(10, 600<<10) // three resumable chunks
	storetest.MustPut(t, ctx, g, "present", data)

	t.Run("Error5xxExhaustsRetries", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultError5xx)
		defer srv.Faults.SetFault(testenv.FaultNone)
		for _, d := range [][]byte{data, big} {
			before := srv.Faults.Requests()
			err := g.Put(ctx, "k", bytes.NewReader(d), int64(len(d)))
			if err == nil {
				t.Fatal("Put succeeded against a failing server")
			}
			if n := srv.Faults.Requests() - before; n != 3 {
				t.Errorf("server saw %d attempts, want 3 (max_attempts)", n)
			}
		}
		if _, err := g.Get(ctx, "present"); err == nil {
			t.Error("Get succeeded against a failing server")
		}
	})
	t.Run("Error5xxTransient", func(t *testing.T) {
		srv.Faults.SetFaultN(testenv.FaultError5xx, 2)
		storetest.MustPut(t, ctx, g, "transient", data)
		// Failures in the middle of a resumable upload: the start and the
		// first chunk pass, the second chunk fails twice.
		before := srv.Faults.Injected()
		srv.Faults.SetFaultAfter(2, testenv.FaultError5xx, 2)
		storetest.MustPut(t, ctx, g, "transient-big", big)
		if n := srv.Faults.Injected() - before; n != 2 {
			t.Errorf("%d requests failed, want 2", n)
		}
		srv.Faults.SetFaultN(testenv.FaultError5xx, 2)
		storetest.CheckGet(t, ctx, g, "transient", data)
		storetest.CheckGet(t, ctx, g, "transient-big", big)
	})
	t.Run("Refuse", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultRefuse)
		defer srv.Faults.SetFault(testenv.FaultNone)
		if err := g.Put(ctx, "k", bytes.NewReader(data), int64(len(data))); err == nil {
			t.Fatal("Put succeeded while the server drops connections")
		}
		if _, err := g.Get(ctx, "present"); err == nil {
			t.Fatal("Get succeeded while the server drops connections")
		}
	})
	t.Run("HangRespectsDeadline", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultHang)
		defer srv.Faults.SetFault(testenv.FaultNone)
		for _, op := range []string{"put", "get", "list"} {
			hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			var err error
			switch op {
			case "put":
				err = g.Put(hctx, "k", bytes.NewReader(data), int64(len(data)))
			case "get":
				_, err = g.Get(hctx, "present")
			case "list":
				_, err = g.List(hctx, "")
			}
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s against a hung server = %v, want context.DeadlineExceeded", op, err)
			}
		}
	})
	t.Run("CorruptRead", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultCorrupt)
		defer srv.Faults.SetFault(testenv.FaultNone)
		// The client checks whole-object reads against the stored CRC32C.
		got, err := store.ReadAll(ctx, g, "present")
		if err == nil {
			if bytes.Equal(got, data) {
				t.Fatal("read the original bytes through a corrupting server")
			}
			t.Fatal("corrupted read was not detected by the CRC32C check")
		}
		t.Logf("expected error: %v", err)
		if objs := storetest.MustList(t, ctx, g, ""); len(objs) == 0 {
			t.Fatal("List returned nothing")
		}
	})
	t.Run("CorruptUploadRejected", func(t *testing.T) {
		for name, d := range map[string][]byte{"single": data, "chunked": big} {
			srv.Faults.SetFault(testenv.FaultCorruptUpload)
			err := g.Put(ctx, "corrupt-"+name, bytes.NewReader(d), int64(len(d)))
			srv.Faults.SetFault(testenv.FaultNone)
			if err == nil {
				t.Fatalf("%s: server accepted a corrupted upload", name)
			}
			t.Logf("%s: expected error: %v", name, err)
			if !strings.Contains(err.Error(), "CRC32C") {
				t.Errorf("%s: error %v does not mention the CRC32C mismatch", name, err)
			}
			if _, err := g.Get(ctx, "corrupt-"+name); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s: Get after rejected upload = %v, want ErrNotFound", name, err)
			}
		}
	})
	t.Run("CorruptStoredObject", func(t *testing.T) {
		storetest.MustPut(t, ctx, g, "rot", data)
		if err := srv.CorruptObject(ctx, "f", "p/rot"); err != nil {
			t.Fatal(err)
		}
		raw, err := srv.ReadObject(ctx, "f", "p/rot")
		if err != nil || bytes.Equal(raw, data) || len(raw) != len(data) {
			t.Fatalf("CorruptObject did not change the stored bytes (%v)", err)
		}
		if got, err := store.ReadAll(ctx, g, "rot"); err == nil {
			t.Fatalf("read of a rotten object returned %d bytes and no error", len(got))
		}
		if err := srv.DeleteObject(ctx, "f", "p/rot"); err != nil {
			t.Fatal(err)
		}
		if err := srv.DeleteObject(ctx, "f", "p/rot"); err != nil {
			t.Fatalf("second DeleteObject: %v", err)
		}
		if _, err := g.Get(ctx, "rot"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after server-side delete = %v", err)
		}
	})
}

// TestGCSEmulatorEnv: STORAGE_EMULATOR_HOST points a plain gs:// URL at the
// emulator.
func TestGCSEmulatorEnv(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srv := testenv.NewGCS(t)
	if err := srv.CreateBucket(ctx, "env"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.Endpoint(), "http://"))
	g := openGCS(t, "gs://env/from-env?max_attempts=2")
	if err := g.Check(ctx); err != nil {
		t.Fatal(err)
	}
	storetest.MustPut(t, ctx, g, "k", []byte("v"))
	storetest.CheckGet(t, ctx, g, "k", []byte("v"))
	if b, err := srv.ReadObject(ctx, "env", "from-env/k"); err != nil || string(b) != "v" {
		t.Fatalf("server has %q, %v", b, err)
	}
}

func TestGCSURL(t *testing.T) {
	for _, bad := range []string{
		"gs:///prefix",
		"gs://b/p?endpoint=ftp://x",
		"gs://b/p?max_attempts=x",
		"gs://b/p?region=us",
	} {
		if st, err := store.Open(context.Background(), bad, zap.NewNop()); err == nil {
			st.Close()
			t.Errorf("Open(%s) succeeded", bad)
		}
	}
}

package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/store/storetest"
	"github.com/wayback-pitr/wayback/testenv"
)

// fastRetry keeps retry tests quick: 3 tries, at most 20 ms apart.
const fastRetry = "&max_attempts=3&max_backoff=20ms"

func openS3(t *testing.T, rawURL string) *store.S3 {
	t.Helper()
	st, err := store.Open(context.Background(), rawURL, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", store.Redact(rawURL), err)
	}
	t.Cleanup(func() { st.Close() })
	s, ok := st.(*store.S3)
	if !ok {
		t.Fatalf("Open(s3://...) returned %T", st)
	}
	return s
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// closedPort returns an address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestS3Conformance(t *testing.T) {
	srv := testenv.NewS3(t)
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
		s := st.(*store.S3)
		// Multi-MiB objects take the multipart path.
		s.MultipartThreshold = 1 << 20
		s.PartSize = 512 << 10
		s.PartConcurrency = 3
		return s
	})
}

func TestS3PrefixIsolation(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srv := testenv.NewS3(t)
	if err := srv.CreateBucket(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	root := openS3(t, srv.URL("shared", ""))
	a := openS3(t, srv.URL("shared", "/db/a/"))
	ab := openS3(t, srv.URL("shared", "db/ab"))
	storetest.MustPut(t, ctx, a, "k", []byte("a"))
	storetest.MustPut(t, ctx, ab, "k", []byte("ab"))
	storetest.CheckGet(t, ctx, a, "k", []byte("a"))
	storetest.CheckGet(t, ctx, ab, "k", []byte("ab"))
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
	if b, err := srv.ReadObject(ctx, "shared", "db/a/k"); err != nil || string(b) != "a" {
		t.Fatalf("server has db/a/k = %q, %v", b, err)
	}
}

// onlyReadSeeker hides io.ReaderAt so that multipart reads parts in turn.
type onlyReadSeeker struct{ io.ReadSeeker }

func TestS3Multipart(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := testenv.NewS3(t)
	if err := srv.CreateBucket(ctx, "mp"); err != nil {
		t.Fatal(err)
	}
	s := openS3(t, srv.URL("mp", "p")+fastRetry)
	s.MultipartThreshold = 1 << 20
	s.PartSize = 300 << 10
	s.PartConcurrency = 2
	data := storetest.Data(42, 2<<20+7)
	for name, r := range map[string]io.ReadSeeker{
		"ReaderAt":   bytes.NewReader(data),
		"ReadSeeker": onlyReadSeeker{bytes.NewReader(data)},
	} {
		t.Run(name, func(t *testing.T) {
			before := srv.Faults.Requests()
			if err := s.Put(ctx, name, r, int64(len(data))); err != nil {
				t.Fatal(err)
			}
			// create + 7 parts + complete
			if n := srv.Faults.Requests() - before; n != 9 {
				t.Errorf("multipart Put made %d requests, want 9", n)
			}
			storetest.CheckGet(t, ctx, s, name, data)
		})
	}
	t.Run("TransientPartFailure", func(t *testing.T) {
		// CreateMultipartUpload and one part pass, then two requests fail.
		srv.Faults.SetFaultAfter(2, testenv.FaultError5xx, 2)
		defer srv.Faults.SetFault(testenv.FaultNone)
		if err := s.Put(ctx, "transient", bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		storetest.CheckGet(t, ctx, s, "transient", data)
	})
	t.Run("CorruptPartRejected", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultCorruptUpload)
		defer srv.Faults.SetFault(testenv.FaultNone)
		err := s.Put(ctx, "bad", bytes.NewReader(data), int64(len(data)))
		if err == nil {
			t.Fatal("multipart Put with corrupted parts succeeded")
		}
		t.Logf("expected error: %v", err)
		srv.Faults.SetFault(testenv.FaultNone)
		if _, err := s.Get(ctx, "bad"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after failed multipart Put = %v, want ErrNotFound", err)
		}
	})
	t.Run("ShortReader", func(t *testing.T) {
		err := s.Put(ctx, "short", onlyReadSeeker{bytes.NewReader(data[:1<<20])}, int64(len(data)))
		if err == nil {
			t.Fatal("Put with a reader shorter than size succeeded")
		}
	})
}

func TestS3Check(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := testenv.NewS3(t)
	if err := srv.CreateBucket(ctx, "exists"); err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		if err := openS3(t, srv.URL("exists", "p")).Check(ctx); err != nil {
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
		{"WrongCredentials", strings.Replace(srv.URL("exists", "p"), "access_key_id="+srv.AccessKeyID(), "access_key_id=intruder", 1), testenv.FaultNone,
			[]string{"credentials rejected by " + srv.Endpoint(), "AWS_ACCESS_KEY_ID"}},
		{"AccessDenied", srv.URL("exists", "p"), testenv.FaultDenied,
			[]string{"credentials rejected by " + srv.Endpoint()}},
		{"Unreachable", "s3://exists/p?endpoint=http://" + closedPort(t) + "&region=us-east-1&access_key_id=a&secret_access_key=b" + fastRetry, testenv.FaultNone,
			[]string{"cannot reach http://127.0.0.1:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openS3(t, tc.url)
			srv.Faults.SetFault(tc.fault)
			defer srv.Faults.SetFault(testenv.FaultNone)
			err := s.Check(ctx)
			if err == nil {
				t.Fatal("Check succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), srv.SecretAccessKey()) {
				t.Errorf("Check error leaks the secret key: %v", err)
			}
		})
	}
}

// TestCheckWithinHang: a store that holds every request without answering
// fails a bounded start-up check with its name instead of blocking it.
func TestCheckWithinHang(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := testenv.NewS3(t)
	if err := srv.CreateBucket(ctx, "exists"); err != nil {
		t.Fatal(err)
	}
	s := openS3(t, srv.URL("exists", "p"))
	srv.Faults.SetFault(testenv.FaultHang)
	defer srv.Faults.SetFault(testenv.FaultNone)
	err := store.CheckWithin(ctx, s, time.Second)
	if err == nil || !strings.Contains(err.Error(), "did not answer within 1s") || !strings.Contains(err.Error(), s.URL()) {
		t.Fatalf("CheckWithin against a hanging store: want an error naming it and saying it did not answer, got %v", err)
	}
	srv.Faults.SetFault(testenv.FaultNone)
	if err := store.CheckWithin(ctx, s, 10*time.Second); err != nil {
		t.Fatalf("CheckWithin after the store answers again: %v", err)
	}
}

func TestS3Faults(t *testing.T) {
	ctx := testCtx(t, 40*time.Second)
	srv := testenv.NewS3(t)
	if err := srv.CreateBucket(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	s := openS3(t, srv.URL("f", "p")+fastRetry)
	data := storetest.Data(9, 100_000)
	storetest.MustPut(t, ctx, s, "present", data)

	t.Run("Error5xxExhaustsRetries", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultError5xx)
		defer srv.Faults.SetFault(testenv.FaultNone)
		before := srv.Faults.Requests()
		err := s.Put(ctx, "k", bytes.NewReader(data), int64(len(data)))
		if err == nil {
			t.Fatal("Put succeeded against a failing server")
		}
		if n := srv.Faults.Requests() - before; n != 3 {
			t.Errorf("server saw %d attempts, want 3 (max_attempts)", n)
		}
		if _, err := s.Get(ctx, "present"); err == nil {
			t.Error("Get succeeded against a failing server")
		}
	})
	t.Run("Error5xxTransient", func(t *testing.T) {
		srv.Faults.SetFaultN(testenv.FaultError5xx, 2)
		storetest.MustPut(t, ctx, s, "transient", data)
		srv.Faults.SetFaultN(testenv.FaultError5xx, 2)
		storetest.CheckGet(t, ctx, s, "transient", data)
	})
	t.Run("Refuse", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultRefuse)
		defer srv.Faults.SetFault(testenv.FaultNone)
		if err := s.Put(ctx, "k", bytes.NewReader(data), int64(len(data))); err == nil {
			t.Fatal("Put succeeded while the server drops connections")
		}
		if _, err := s.Get(ctx, "present"); err == nil {
			t.Fatal("Get succeeded while the server drops connections")
		}
	})
	t.Run("HangRespectsDeadline", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultHang)
		defer srv.Faults.SetFault(testenv.FaultNone)
		for _, op := range []string{"put", "get"} {
			hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			var err error
			if op == "put" {
				err = s.Put(hctx, "k", bytes.NewReader(data), int64(len(data)))
			} else {
				_, err = s.Get(hctx, "present")
			}
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s against a hung server = %v, want context.DeadlineExceeded", op, err)
			}
		}
	})
	t.Run("HangThenRecover", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultHang)
		time.AfterFunc(200*time.Millisecond, func() { srv.Faults.SetFault(testenv.FaultNone) })
		storetest.CheckGet(t, ctx, s, "present", data)
	})
	// big goes up in parts: S3 then has only a composite checksum, which the
	// SDK cannot check on a whole-object read.
	big := openS3(t, srv.URL("f", "p")+fastRetry)
	big.MultipartThreshold, big.PartSize = 64<<10, 64<<10
	storetest.MustPut(t, ctx, big, "multipart", data)

	t.Run("CorruptRead", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultCorrupt)
		defer srv.Faults.SetFault(testenv.FaultNone)
		// gofakes3 returns the x-amz-checksum-crc32c the SDK sent with the
		// upload, so the SDK catches the damage.
		got, err := store.ReadAll(ctx, s, "present")
		if err == nil || !strings.Contains(err.Error(), "checksum did not match") {
			t.Fatalf("read through a corrupting server = %d bytes, %v; want a checksum error", len(got), err)
		}
		// Without a whole-object checksum the bytes arrive altered; the
		// archive format's own checksums must catch that.
		got, err = store.ReadAll(ctx, s, "multipart")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(data) || got[0] == data[0] || !bytes.Equal(got[1:], data[1:]) {
			t.Fatalf("corruption should flip exactly the first byte")
		}
		// Listing still works: only object data is corrupted.
		if objs := storetest.MustList(t, ctx, s, ""); len(objs) == 0 {
			t.Fatal("List returned nothing")
		}
	})
	t.Run("CorruptUploadRejected", func(t *testing.T) {
		srv.Faults.SetFault(testenv.FaultCorruptUpload)
		defer srv.Faults.SetFault(testenv.FaultNone)
		err := s.Put(ctx, "corrupt-upload", bytes.NewReader(data), int64(len(data)))
		if err == nil {
			t.Fatal("server accepted a corrupted upload")
		}
		if !strings.Contains(err.Error(), "BadDigest") {
			t.Errorf("error %v does not name BadDigest", err)
		}
		srv.Faults.SetFault(testenv.FaultNone)
		if _, err := s.Get(ctx, "corrupt-upload"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after rejected upload = %v, want ErrNotFound", err)
		}
	})
	t.Run("CorruptStoredObject", func(t *testing.T) {
		storetest.MustPut(t, ctx, s, "rot", data)
		if err := srv.CorruptObject(ctx, "f", "p/rot"); err != nil {
			t.Fatal(err)
		}
		if got, err := store.ReadAll(ctx, s, "rot"); err == nil || !strings.Contains(err.Error(), "checksum did not match") {
			t.Fatalf("read of a rotten object = %d bytes, %v; want a checksum error", len(got), err)
		}
		if err := srv.CorruptObject(ctx, "f", "p/multipart"); err != nil {
			t.Fatal(err)
		}
		if got := storetest.MustGet(t, ctx, s, "multipart"); bytes.Equal(got, data) || len(got) != len(data) {
			t.Fatal("CorruptObject did not change the stored bytes")
		}
		raw, err := srv.ReadObject(ctx, "f", "p/multipart")
		if err != nil || bytes.Equal(raw, data) {
			t.Fatalf("ReadObject after CorruptObject: %v", err)
		}
		if err := srv.DeleteObject(ctx, "f", "p/rot"); err != nil {
			t.Fatal(err)
		}
		if err := srv.DeleteObject(ctx, "f", "p/rot"); err != nil {
			t.Fatalf("second DeleteObject: %v", err)
		}
		if _, err := s.Get(ctx, "rot"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after server-side delete = %v", err)
		}
	})
}

// TestS3EnvConfig: endpoint, region and credentials from the standard AWS
// environment variables, with path-style implied by the custom endpoint.
func TestS3EnvConfig(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srv := testenv.NewS3(t)
	if err := srv.CreateBucket(ctx, "env"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.Endpoint())
	t.Setenv("AWS_REGION", "eu-west-3")
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKeyID())
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretAccessKey())
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_MAX_ATTEMPTS", "2")
	s := openS3(t, "s3://env/from-env")
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	storetest.MustPut(t, ctx, s, "k", []byte("v"))
	if b, err := srv.ReadObject(ctx, "env", "from-env/k"); err != nil || string(b) != "v" {
		t.Fatalf("server has %q, %v", b, err)
	}
	// Wrong key from the environment: rejected with a clear error.
	t.Setenv("AWS_ACCESS_KEY_ID", "intruder")
	if err := openS3(t, "s3://env/from-env").Check(ctx); err == nil || !strings.Contains(err.Error(), "credentials rejected") {
		t.Fatalf("Check with a wrong key from the environment = %v", err)
	}
}

func TestS3URL(t *testing.T) {
	srv := testenv.NewS3(t)
	s := openS3(t, srv.URL("b", "p/q"))
	u := s.URL()
	if strings.Contains(u, srv.SecretAccessKey()) || strings.Contains(u, srv.AccessKeyID()) {
		t.Fatalf("URL() leaks credentials: %s", u)
	}
	if !strings.HasPrefix(u, "s3://b/p/q?") || !strings.Contains(u, "REDACTED") {
		t.Fatalf("URL() = %s", u)
	}
	for _, bad := range []string{
		"s3:///prefix",
		"s3://b/p?endpoint=ftp://x",
		"s3://b/p?path_style=maybe",
		"s3://b/p?max_attempts=0",
		"s3://b/p?access_key_id=only",
		"s3://b/p?bucket_typo=1",
	} {
		if st, err := store.Open(context.Background(), bad, zap.NewNop()); err == nil {
			st.Close()
			t.Errorf("Open(%s) succeeded", bad)
		} else if strings.Contains(err.Error(), "only") && strings.Contains(bad, "access_key_id=only") {
			t.Errorf("Open error leaks the key: %v", err)
		}
	}
}

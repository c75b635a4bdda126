package crypt_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/crypt"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/store/storetest"
)

func mustKey(t *testing.T) crypt.Key {
	t.Helper()
	k, err := crypt.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wrap(t *testing.T, stores []store.Store, ring crypt.Keyring, write bool) ([]store.Store, error) {
	t.Helper()
	return crypt.Wrap(context.Background(), stores, crypt.Options{Keys: ring, Write: write})
}

func mustWrap(t *testing.T, stores []store.Store, ring crypt.Keyring, write bool) []store.Store {
	t.Helper()
	out, err := wrap(t, stores, ring, write)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConformance(t *testing.T) {
	key := mustKey(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustWrap(t, []store.Store{store.NewFile(t.TempDir())}, crypt.Keyring{Current: key}, true)[0]
	})
}

func TestSizes(t *testing.T) {
	for _, n := range []int64{0, 1, crypt.ChunkSize - 1, crypt.ChunkSize, crypt.ChunkSize + 1, 3*crypt.ChunkSize + 17, 10 * crypt.ChunkSize} {
		got, ok := crypt.PlainSize(crypt.SealedSize(n))
		if !ok || got != n {
			t.Errorf("PlainSize(SealedSize(%d)) = %d, %v", n, got, ok)
		}
	}
	if _, ok := crypt.PlainSize(crypt.HeaderSize + 3); ok {
		t.Error("PlainSize accepted a size too small for one chunk")
	}
}

func TestParseKey(t *testing.T) {
	k := mustKey(t)
	sec := k.Secret()
	for name, in := range map[string][]byte{
		"raw":       sec,
		"hex":       []byte(hex.EncodeToString(sec) + "\n"),
		"base64":    []byte(base64.StdEncoding.EncodeToString(sec) + "\n"),
		"base64url": []byte(base64.RawURLEncoding.EncodeToString(sec)),
	} {
		got, err := crypt.ParseKey(in)
		if err != nil || got.ID != k.ID {
			t.Errorf("%s: ParseKey = %v, %v; want id %s", name, got.ID, err, k.ID)
		}
	}
	for _, bad := range []string{"", "short", strings.Repeat("z", 64), hex.EncodeToString(sec[:16])} {
		if _, err := crypt.ParseKey([]byte(bad)); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	path := filepath.Join(t.TempDir(), "k")
	os.WriteFile(path, []byte(hex.EncodeToString(sec)), 0o600)
	if got, err := crypt.LoadKeyFile(path); err != nil || got.ID != k.ID {
		t.Errorf("LoadKeyFile = %v, %v", got.ID, err)
	}
}

// TestAtRest: what lands on disk holds no plaintext, every byte of it is
// authenticated, truncation at any point and swapping objects are caught.
func TestAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	raw := store.NewFile(dir)
	s := mustWrap(t, []store.Store{raw}, crypt.Keyring{Current: mustKey(t)}, true)[0]
	marker := []byte("MARKER-7f3a-plaintext-row")
	plain := bytes.Repeat(marker, 3*crypt.ChunkSize/len(marker)+5) // > 3 chunks
	storetest.MustPut(t, ctx, s, "segments/a.seg", plain)
	storetest.MustPut(t, ctx, s, "segments/b.seg", []byte("MARKER-7f3a-short"))
	storetest.CheckGet(t, ctx, s, "segments/a.seg", plain)

	sealed := storetest.MustGet(t, ctx, raw, "segments/a.seg")
	if bytes.Contains(sealed, []byte("MARKER-7f3a")) {
		t.Fatal("plaintext marker found in the stored object")
	}
	if int64(len(sealed)) != crypt.SealedSize(int64(len(plain))) || !bytes.HasPrefix(sealed, []byte(crypt.Magic)) {
		t.Fatalf("stored object: %d bytes, prefix %q", len(sealed), sealed[:4])
	}
	objs := storetest.MustList(t, ctx, s, "segments/")
	if len(objs) != 2 || objs[0].Size != int64(len(plain)) {
		t.Fatalf("List through the wrapper = %+v, want plaintext sizes", objs)
	}

	readBack := func() error {
		rc, err := s.Get(ctx, "segments/a.seg")
		if err != nil {
			return err
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatal("read returned different plaintext without an error")
		}
		return err
	}
	// Flip one bit at a few places: header, first chunk, tag, last chunk.
	for _, off := range []int{5, 20, 30, crypt.HeaderSize + 3, crypt.HeaderSize + crypt.ChunkSize + 2, len(sealed) - 1} {
		bad := bytes.Clone(sealed)
		bad[off] ^= 0x10
		storetest.MustPut(t, ctx, raw, "segments/a.seg", bad)
		if err := readBack(); err == nil {
			t.Errorf("bit flipped at %d: read succeeded", off)
		}
	}
	// Truncation, including exactly at chunk boundaries (which only the
	// last-chunk flag catches) and inside the header.
	chunk := crypt.ChunkSize + 16
	for _, n := range []int{0, 3, 10, crypt.HeaderSize, crypt.HeaderSize + chunk, crypt.HeaderSize + 2*chunk, crypt.HeaderSize + 3*chunk, len(sealed) - 1} {
		storetest.MustPut(t, ctx, raw, "segments/a.seg", sealed[:n])
		err := readBack()
		if err == nil {
			t.Errorf("truncated to %d bytes: read succeeded", n)
		}
		if n >= crypt.HeaderSize && !errors.Is(err, crypt.ErrAuthentication) {
			t.Errorf("truncated to %d bytes: %v, want ErrAuthentication", n, err)
		}
	}
	// Swapping: b's ciphertext under a's key does not authenticate.
	storetest.MustPut(t, ctx, raw, "segments/a.seg", storetest.MustGet(t, ctx, raw, "segments/b.seg"))
	if err := readBack(); !errors.Is(err, crypt.ErrAuthentication) {
		t.Errorf("swapped object: %v, want ErrAuthentication", err)
	}
	// A plaintext object in an encrypted archive is refused.
	storetest.MustPut(t, ctx, raw, "segments/a.seg", plain)
	if err := readBack(); !errors.Is(err, crypt.ErrNotEncrypted) {
		t.Errorf("plaintext object: %v, want ErrNotEncrypted", err)
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	raws := []store.Store{store.NewFile(t.TempDir()), store.NewFile(t.TempDir())}
	k1, k2, other := mustKey(t), mustKey(t), mustKey(t)

	// Encryption off on a new archive: the stores come back as they are.
	out := mustWrap(t, raws, crypt.Keyring{}, true)
	if out[0] != raws[0] {
		t.Fatal("Wrap without keys wrapped the stores")
	}
	// Reading with a key an archive that has none is refused.
	if _, err := wrap(t, raws, crypt.Keyring{Current: k1}, false); err == nil {
		t.Fatal("reader with a key accepted an archive without keys")
	}

	w1 := mustWrap(t, raws, crypt.Keyring{Current: k1}, true)
	storetest.MustPut(t, ctx, w1[0], "segments/old.seg", []byte("written under k1"))
	// Both stores hold the key object.
	for _, r := range raws {
		if objs := storetest.MustList(t, ctx, r, crypt.KeyPrefix); len(objs) != 1 || !strings.Contains(objs[0].Key, k1.ID) {
			t.Fatalf("%s keys: %+v", r.URL(), objs)
		}
	}
	// The wrapper hides key objects and refuses to touch them.
	if objs := storetest.MustList(t, ctx, w1[0], ""); len(objs) != 1 {
		t.Fatalf("wrapper lists %+v", objs)
	}
	if err := w1[0].Delete(ctx, storetest.MustList(t, ctx, raws[0], crypt.KeyPrefix)[0].Key); err == nil {
		t.Fatal("wrapper deleted a key object")
	}

	// No key: one clear error naming the key id.
	_, err := wrap(t, raws, crypt.Keyring{}, false)
	var missing *crypt.MissingKeyError
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), k1.ID) || !strings.Contains(err.Error(), "encryption.key_file") {
		t.Fatalf("no key: %v", err)
	}
	// Wrong key: refused, for readers and writers alike.
	for _, write := range []bool{false, true} {
		_, err = wrap(t, raws, crypt.Keyring{Current: other}, write)
		var wrong *crypt.WrongKeyError
		if !errors.As(err, &wrong) || !strings.Contains(err.Error(), k1.ID) || !strings.Contains(err.Error(), other.ID) {
			t.Fatalf("wrong key (write %v): %v", write, err)
		}
	}

	// Rotation: k2 current, k1 old. New objects under k2's data key; old
	// ones still read.
	w2 := mustWrap(t, raws, crypt.Keyring{Current: k2, Old: []crypt.Key{k1}}, true)
	storetest.MustPut(t, ctx, w2[1], "segments/new.seg", []byte("written under k2"))
	storetest.CheckGet(t, ctx, w2[1], "segments/new.seg", []byte("written under k2"))
	for _, r := range raws {
		if objs := storetest.MustList(t, ctx, r, crypt.KeyPrefix); len(objs) != 2 {
			t.Fatalf("%s keys after rotation: %+v", r.URL(), objs)
		}
	}
	// Store 1 never had old.seg; store 0 did. Reading it through store 0.
	storetest.CheckGet(t, ctx, w2[0], "segments/old.seg", []byte("written under k1"))

	// Only k2 given: new objects read, old ones fail naming k1.
	r2 := mustWrap(t, raws, crypt.Keyring{Current: k2}, false)
	storetest.CheckGet(t, ctx, r2[1], "segments/new.seg", []byte("written under k2"))
	if _, err := r2[0].Get(ctx, "segments/old.seg"); err == nil || !strings.Contains(err.Error(), k1.ID) || !strings.Contains(err.Error(), "old_key_files") {
		t.Fatalf("old object without the old key: %v", err)
	}
	// Readers cannot write.
	if err := store.PutBytes(ctx, r2[0], "segments/x.seg", []byte("x")); err == nil {
		t.Fatal("read-only wrapper accepted a put")
	}
	// Only k1 given (the old key alone): old objects read.
	r1 := mustWrap(t, raws, crypt.Keyring{Current: k1}, false)
	storetest.CheckGet(t, ctx, r1[0], "segments/old.seg", []byte("written under k1"))
}

// keyNames lists the raw key objects a store holds.
func keyNames(t *testing.T, s store.Store) []string {
	t.Helper()
	return storetest.ListKeys(t, context.Background(), s, crypt.KeyPrefix)
}

// TestWrapWithStoreDown: a writer opening an encrypted archive while one
// store is down uses the data key the others hold and creates none; the
// down store gets the key objects from SyncKeys and then restores alone.
// With no reachable store holding a current data key, Wrap refuses rather
// than create one the down store may already have.
func TestWrapWithStoreDown(t *testing.T) {
	ctx := context.Background()
	key := mustKey(t)
	ring := crypt.Keyring{Current: key}
	a, b := store.NewFile(t.TempDir()), store.NewFile(t.TempDir())
	mustWrap(t, []store.Store{a}, ring, true) // the archive's data key, in A only
	want := keyNames(t, a)
	if len(want) != 1 {
		t.Fatalf("A holds key objects %v, want one", want)
	}

	// B (empty, as if newly configured) is down: A's key is used.
	ws, err := crypt.Wrap(ctx, []store.Store{a, b}, crypt.Options{Keys: ring, Write: true, Down: []bool{false, true}})
	if err != nil {
		t.Fatal(err)
	}
	if got := keyNames(t, a); len(got) != 1 || got[0] != want[0] {
		t.Fatalf("with B down, A holds key objects %v, want only %v", got, want)
	}
	if got := keyNames(t, b); len(got) != 0 {
		t.Fatalf("Wrap wrote %v to the store marked down", got)
	}
	if err := ws[1].(*crypt.Store).SyncKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keyNames(t, b); len(got) != 1 || got[0] != want[0] {
		t.Fatalf("after SyncKeys B holds %v, want %v", got, want)
	}
	if err := store.PutBytes(ctx, ws[1], "segments/x", []byte("secret rows")); err != nil {
		t.Fatal(err)
	}
	alone := mustWrap(t, []store.Store{b}, ring, false)
	if got, err := store.ReadAll(ctx, alone[0], "segments/x"); err != nil || string(got) != "secret rows" {
		t.Fatalf("B alone after SyncKeys: %q, %v", got, err)
	}

	// The store holding the key is down and the other has none: no new
	// data key, a clear error, nothing written.
	c := store.NewFile(t.TempDir())
	_, err = crypt.Wrap(ctx, []store.Store{c, a}, crypt.Options{Keys: ring, Write: true, Down: []bool{false, true}})
	var unavailable *crypt.DataKeyUnavailableError
	if !errors.As(err, &unavailable) || !strings.Contains(err.Error(), a.URL()) {
		t.Fatalf("Wrap with the key's only holder down: %v, want a DataKeyUnavailableError naming %s", err, a.URL())
	}
	if got := keyNames(t, c); len(got) != 0 {
		t.Fatalf("a data key was created while the store holding the current one was down: %v", got)
	}
	if got := keyNames(t, a); len(got) != 1 {
		t.Fatalf("A's keys changed: %v", got)
	}
}

package wayback_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/crypt"
	"github.com/wayback-pitr/wayback/store"
)

// TestOpenEncrypted: an archive opened with a key for writing stores
// every object encrypted; opening it again without the key fails at Open,
// before anything is read, and with the key reads the plaintext back.
func TestOpenEncrypted(t *testing.T) {
	ctx := t.Context()
	url := "file://" + filepath.Join(t.TempDir(), "a")
	key, err := crypt.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := crypt.Keyring{Current: key}
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: []string{url}, Keys: keys, Check: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutBytes(ctx, arc.Stores()[0], "probe", []byte("marker-plaintext")); err != nil {
		t.Fatal(err)
	}
	arc.Close()

	_, err = wayback.Open(ctx, wayback.ArchiveOptions{Stores: []string{url}})
	var missing *crypt.MissingKeyError
	if !errors.As(err, &missing) {
		t.Fatalf("opening an encrypted archive without its key: got %v, want a MissingKeyError", err)
	}
	raw, err := store.ReadAll(ctx, store.NewFile(filepath.Join(filepath.Dir(url[len("file://"):]), "a")), "probe")
	if err != nil || string(raw) == "marker-plaintext" {
		t.Fatalf("the stored object is not encrypted (err %v)", err)
	}
	arc, err = wayback.Open(ctx, wayback.ArchiveOptions{Stores: []string{url}, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer arc.Close()
	if got, err := store.ReadAll(ctx, arc.Stores()[0], "probe"); err != nil || string(got) != "marker-plaintext" {
		t.Fatalf("read back %q, %v", got, err)
	}
}

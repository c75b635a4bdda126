package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/crypt"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
)

// encMarker is written into rows; no stored object of an encrypted archive
// may contain it.
const encMarker = "WBMARKER-5c1e-plaintext"

// openRaw opens a store without any decryption layer, closed when the test
// ends.
func openRaw(t *testing.T, rawURL string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), rawURL, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawObjects reads every object of a store without any decryption and
// returns the keys of those containing needle.
func rawObjects(t *testing.T, rawURL string, needle string) (objects int, hits []string) {
	t.Helper()
	ctx := context.Background()
	s := openRaw(t, rawURL)
	objs, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		b, err := store.ReadAll(ctx, s, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(needle)) {
			hits = append(hits, o.Key)
		}
	}
	return len(objs), hits
}

func writeKeyFile(t *testing.T, dir, name string) (string, crypt.Key) {
	t.Helper()
	k, err := crypt.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k.Secret())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, k
}

// TestEncryption is issue 6's acceptance 3: an encrypted archive (a file
// store and an S3 store) restores exactly with the key; without it and
// with a wrong key every reading command fails with one clear line and
// restore leaves no target database behind; no stored object holds a
// marker written into rows, while an unencrypted backup of the same data
// does (so the scan can fail). It also checks that the DSN password and
// the S3 secret key never reach the logs.
func TestEncryption(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	s3 := testenv.NewS3(t)
	if err := s3.CreateBucket(ctx, "wb-enc"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, key := writeKeyFile(t, dir, "wayback.key")
	wrongFile, wrong := writeKeyFile(t, dir, "other.key")

	// A password in the DSN (trust auth ignores it) and the S3 secret in
	// the store URL: neither may appear in any log.
	const password = "pw-SECRET-9d4e71"
	u, err := url.Parse(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	dsn := u.String()
	e.stores = []string{e.stores[0], s3.URL("wb-enc", "shop")}
	base := fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %q\n  - %q\nflush_interval: 200ms\n", dsn, e.stores[0], e.stores[1])
	writeCfg := func(name, extra string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(base+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.config = writeCfg("enc.yaml", fmt.Sprintf("encryption:\n  key_file: %q\n", keyFile))
	noKey := writeCfg("nokey.yaml", "")
	wrongKey := writeCfg("wrongkey.yaml", fmt.Sprintf("encryption:\n  key_file: %q\n", wrongFile))

	e.exec(`CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, n numeric)`)
	e.exec(`INSERT INTO notes SELECT i, $1 || '-base-' || i, i * 1.5 FROM generate_series(1, 3000) i`, encMarker)
	e.mustRun("setup")
	agent := e.startAgent("--log-level", "debug")
	// The first base backup must be complete before the agent is stopped
	// (a SIGTERM cancels one in progress; on a loaded machine it can take
	// longer than the workload below).
	e.waitBackup(1)
	e.waitArchived()
	e.exec(`INSERT INTO notes SELECT i, $1 || '-stream-' || i, i FROM generate_series(3001, 4000) i`, encMarker)
	e.exec(`UPDATE notes SET body = $1 || '-updated' WHERE id % 7 = 0`, encMarker)
	e.exec(`DELETE FROM notes WHERE id % 11 = 0`)
	e.waitArchived()
	cp := e.checkpoint("after the workload")
	agent.stop(t)
	agentLog, _ := os.ReadFile(agent.log)

	// With the key: restore is exact; verify, list, log and undo work.
	restore := e.run("restore", "--target-dsn", e.pg.DSN("restored"), "--latest", "--log-level", "debug")
	if restore.code != 0 {
		t.Fatalf("restore with the key:\n%s", restore)
	}
	e.assertRestored("restored", cp.sums, "encrypted archive restored with the key")
	if r := e.run("verify"); r.code != 0 {
		t.Fatalf("verify with the key:\n%s", r)
	}
	e.mustRun("list", "--json")
	var entry struct {
		XID uint32 `json:"xid"`
	}
	logOut := e.mustRun("log", "--json", "--table", "notes", "--op", "delete")
	if err := json.Unmarshal([]byte(strings.SplitN(logOut, "\n", 2)[0]), &entry); err != nil || entry.XID == 0 {
		t.Fatalf("log --json: %v\n%s", err, logOut)
	}
	if undo := e.mustRun("undo", "--xid", fmt.Sprint(entry.XID)); !strings.Contains(undo, "INSERT") {
		t.Fatalf("undo of the DELETE has no INSERT:\n%s", undo)
	}

	// Secrets never logged (agent at debug level, restore).
	for what, out := range map[string]string{"agent log": string(agentLog), "restore stderr": restore.stderr, "restore stdout": restore.stdout} {
		for _, secret := range []string{password, s3.SecretAccessKey(), hex.EncodeToString(key.Secret())} {
			if strings.Contains(out, secret) {
				t.Errorf("%s contains a secret (%.6s…)", what, secret)
			}
		}
	}
	if !strings.Contains(string(agentLog), "created archive data key") {
		t.Errorf("agent log does not say it created the data key:\n%s", tail(string(agentLog), 20))
	}

	// Without the key and with a wrong key: one clear line, no target.
	for _, c := range []struct {
		name, cfg, want string
	}{
		{"no key", noKey, "wayback: archive is encrypted (key id " + key.ID + "); give the key with encryption.key_file"},
		{"wrong key", wrongKey, "wayback: archive is encrypted with key id " + key.ID + ", but the configured key has id " + wrong.ID},
	} {
		db := strings.ReplaceAll(c.name, " ", "_")
		for _, args := range [][]string{
			{"restore", "--target-dsn", e.pg.DSN(db), "--latest"},
			{"verify"}, {"list"}, {"log"}, {"undo", "--xid", fmt.Sprint(entry.XID)},
		} {
			r := e.run(append(args, "--config", c.cfg)...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], c.want) {
				t.Errorf("%s, %s: want one line starting %q, got\n%s", c.name, args[0], c.want, r)
			}
		}
		if e.dbExists(db) {
			t.Errorf("%s: restore left database %s behind", c.name, db)
		}
	}

	// No stored object holds the marker, in either store; every object
	// but the key objects carries the encryption header.
	for _, s := range e.stores {
		n, hits := rawObjects(t, s, encMarker)
		if len(hits) > 0 {
			t.Errorf("%s: plaintext marker in %v", store.Redact(s), hits)
		}
		if n < 5 {
			t.Errorf("%s holds only %d objects", store.Redact(s), n)
		}
		_, plain := rawObjects(t, s, "") // every object
		for _, k := range plain {
			b := readRaw(t, s, k)
			if !strings.HasPrefix(k, crypt.KeyPrefix) && !bytes.HasPrefix(b, []byte(crypt.Magic)) {
				t.Errorf("%s: %s is not encrypted", store.Redact(s), k)
			}
		}
	}

	// Control: an unencrypted backup of the same data holds the marker, so
	// the scan above can fail.
	plainStore := "file://" + filepath.Join(dir, "plain-store")
	plainCfg := filepath.Join(dir, "plain.yaml")
	os.WriteFile(plainCfg, []byte(fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %s\n", dsn, plainStore)), 0o600)
	e.mustRun("backup", "--config", plainCfg)
	if _, hits := rawObjects(t, plainStore, encMarker); len(hits) == 0 {
		t.Fatal("control: the unencrypted backup holds no marker, so the scan proves nothing")
	}

	// A damaged encrypted segment is corrupt to verify (GCM), and restore
	// falls back to the other store's copy.
	segs, _ := filepath.Glob(filepath.Join(e.storeDir(0), "segments", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no segments in the file store")
	}
	var damaged string
	for _, p := range segs {
		b, _ := os.ReadFile(p)
		if len(b) > crypt.HeaderSize+100 {
			b[len(b)/2] ^= 0x01
			os.WriteFile(p, b, 0o644)
			damaged = filepath.Base(p)
			break
		}
	}
	if damaged == "" {
		t.Fatal("no segment with a body to damage")
	}
	if r := e.run("verify"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, damaged) || !strings.Contains(r.stdout+r.stderr, "corrupt") {
		t.Errorf("verify after damaging %s:\n%s", damaged, r)
	}
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored_fallback"), "--latest")
	e.assertRestored("restored_fallback", cp.sums, "restore with one store's segment damaged")
}

func readRaw(t *testing.T, rawURL, key string) []byte {
	t.Helper()
	b, err := store.ReadAll(context.Background(), openRaw(t, rawURL), key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

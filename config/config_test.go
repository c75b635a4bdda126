package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrecedenceFileEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("postgres:\n  dsn: from-file\n  slot: s1\nstores: [file:///a, file:///b]\nflush_interval: 250ms\nmax_segment_size: 4MiB\n"), 0o600)
	c := Defaults()
	if err := LoadFile(p, &c); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"WAYBACK_POSTGRES_DSN": "from-env", "WAYBACK_MIN_COPIES": "1"}
	if err := ApplyEnv(&c, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(Need{DSN: true, Stores: true, Write: true}); err != nil {
		t.Fatal(err)
	}
	if c.Postgres.DSN != "from-env" || c.Postgres.Slot != "s1" || c.Postgres.Publication != "wayback" ||
		c.MinCopies != 1 || time.Duration(c.FlushInterval) != 250*time.Millisecond || c.MaxSegment != 4<<20 || len(c.Stores) != 2 {
		t.Fatalf("config = %+v", c)
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		need Need
		want string
	}{
		{Defaults(), Need{DSN: true}, "postgres.dsn is not set"},
		{Defaults(), Need{Stores: true}, "stores is empty"},
		{func() Config { c := Defaults(); c.Stores = []string{"file:///a"}; c.MinCopies = 3; return c }(), Need{Stores: true, Write: true}, "min_copies is 3"},
	} {
		err := tc.cfg.Validate(tc.need)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Validate = %v, want %q", err, tc.want)
		}
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("postgres:\n  dns: x\n"), 0o600)
	c := Defaults()
	if err := LoadFile(p, &c); err == nil || !strings.Contains(err.Error(), "dns") {
		t.Fatalf("LoadFile = %v", err)
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, nil, 0o600)
	c := Defaults()
	if err := LoadFile(p, &c); err != nil {
		t.Fatal(err)
	}
}

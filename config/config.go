// Package config loads wayback's settings from a YAML file, WAYBACK_*
// environment variables and command-line flags, in that order of
// precedence (flags win). Every key is documented in docs/config.md.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. The YAML keys are the documented names.
type Config struct {
	Postgres      Postgres   `yaml:"postgres"`
	Stores        []string   `yaml:"stores"`
	MinCopies     int        `yaml:"min_copies"`
	FlushInterval Duration   `yaml:"flush_interval"`
	MaxSegment    ByteSize   `yaml:"max_segment_size"`
	BaseBackup    BaseBackup `yaml:"basebackup"`
	Verify        Verify     `yaml:"verify"`
	Retention     Retention  `yaml:"retention"`
	Encryption    Encryption `yaml:"encryption"`
	Metrics       Metrics    `yaml:"metrics"`
	Slot          Slot       `yaml:"slot"`
}

// Metrics configures the agent's Prometheus endpoint (docs/metrics.md).
type Metrics struct {
	// Listen is host:port for /metrics, /healthz and /readyz; empty: off.
	// `wayback status` reads it too when set.
	Listen string `yaml:"listen"`
}

// Slot configures the replication-slot safety checks.
type Slot struct {
	// MaxRetained is how much WAL the slot may hold back on the server
	// before the agent warns (default 1GiB).
	MaxRetained ByteSize `yaml:"max_retained"`
}

// Encryption configures client-side encryption of the archive at rest
// (docs/encryption.md). With no key set, objects are written in plaintext.
type Encryption struct {
	// KeyFile holds the current key: 32 raw bytes, 64 hex digits or base64.
	KeyFile string `yaml:"key_file"`
	// KeyEnv names an environment variable holding the current key (hex or
	// base64), for platforms that inject secrets as variables.
	KeyEnv string `yaml:"key_env"`
	// OldKeyFiles hold keys that were current before a rotation: objects
	// written under them stay readable.
	OldKeyFiles []string `yaml:"old_key_files"`
}

// Verify configures restore drills (wayback verify --deep), which the
// agent runs on a schedule.
type Verify struct {
	// Schedule is a cron expression (5 fields, or @daily, @every 6h, ...)
	// in the agent's local time; empty: the agent runs no drills.
	Schedule string `yaml:"schedule"`
	// ScratchDSN names the database drills restore into; empty: a private
	// local cluster started from postgres.bin_dir.
	ScratchDSN string `yaml:"scratch_dsn"`
}

// Postgres says how to reach the source database.
type Postgres struct {
	DSN         string `yaml:"dsn"`
	Slot        string `yaml:"slot"`
	Publication string `yaml:"publication"`
	// BinDir holds pg_dump of the server's major version.
	BinDir string `yaml:"bin_dir"`
}

// BaseBackup configures base backups.
type BaseBackup struct {
	Parallel int `yaml:"parallel"`
	// Schedule is when the agent takes base backups: a cron expression
	// (5 fields, or @daily, @every 6h, ...) in the agent's local time, or
	// "off". Default @daily.
	Schedule string `yaml:"schedule"`
	// CopyFormat is how table rows are stored: "auto" (default) copies
	// tables whose columns all have built-in types in PostgreSQL's binary
	// COPY format, which the server writes and reads about a quarter
	// faster, and the rest as text; "text" stores every table as text.
	CopyFormat string `yaml:"copy_format"`
}

// Retention says which base backups to keep (docs/operations.md). A
// backup is kept when any rule keeps it; the newest is always kept.
// Segments older than the oldest kept backup are deleted with the
// backups. All zero: keep everything.
type Retention struct {
	// Daily, Weekly, Monthly, Yearly keep the newest backup of each of the
	// last N days, ISO weeks, months or years that have one (UTC).
	Daily   int `yaml:"daily"`
	Weekly  int `yaml:"weekly"`
	Monthly int `yaml:"monthly"`
	Yearly  int `yaml:"yearly"`
	// Last keeps the N newest backups.
	Last int `yaml:"last"`
	// KeepWithin keeps every backup younger than this ("30d", "720h").
	KeepWithin Duration `yaml:"keep_within"`
}

// IsZero reports whether no rule is set, i.e. nothing is ever expired.
func (r Retention) IsZero() bool {
	return r == Retention{}
}

// Duration is a time.Duration written as "250ms", "1s", "5m" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 250ms, 1s, 5m, 30d)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// parseDuration is time.ParseDuration plus whole days ("30d"), which
// retention periods are naturally written in.
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// ParseDurationInto parses a flag or variable value such as "250ms".
func ParseDurationInto(s string, d *Duration) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (use e.g. 250ms, 1s, 5m)", s)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size written as "16MiB", "512KiB" or a plain number of bytes.
type ByteSize int64

// ParseByteSize parses "16MiB", "1GB", "4096".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (use e.g. 16MiB)", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// Defaults returns the configuration used for every key left unset.
func Defaults() Config {
	return Config{
		Postgres:      Postgres{Slot: "wayback", Publication: "wayback"},
		FlushInterval: Duration(time.Second),
		MaxSegment:    16 << 20,
		BaseBackup:    BaseBackup{Parallel: 2, Schedule: "@daily", CopyFormat: "auto"},
		Slot:          Slot{MaxRetained: 1 << 30},
	}
}

// LoadFile reads a YAML config file over the defaults. Unknown keys are
// errors: a misspelt key must not silently fall back to a default.
func LoadFile(path string, into *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file (io.EOF) is a valid all-defaults config.
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// ApplyEnv overrides keys from WAYBACK_* variables (lookup is os.LookupEnv
// in production and a map in tests).
func ApplyEnv(c *Config, lookup func(string) (string, bool)) error {
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok {
			*dst = v
		}
	}
	str("WAYBACK_POSTGRES_DSN", &c.Postgres.DSN)
	str("WAYBACK_POSTGRES_SLOT", &c.Postgres.Slot)
	str("WAYBACK_POSTGRES_PUBLICATION", &c.Postgres.Publication)
	str("WAYBACK_POSTGRES_BIN_DIR", &c.Postgres.BinDir)
	str("WAYBACK_VERIFY_SCHEDULE", &c.Verify.Schedule)
	str("WAYBACK_BASEBACKUP_SCHEDULE", &c.BaseBackup.Schedule)
	for name, dst := range map[string]*int{"WAYBACK_RETENTION_DAILY": &c.Retention.Daily, "WAYBACK_RETENTION_WEEKLY": &c.Retention.Weekly,
		"WAYBACK_RETENTION_MONTHLY": &c.Retention.Monthly, "WAYBACK_RETENTION_YEARLY": &c.Retention.Yearly, "WAYBACK_RETENTION_LAST": &c.Retention.Last} {
		if v, ok := lookup(name); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s=%q is not a number", name, v)
			}
			*dst = n
		}
	}
	if v, ok := lookup("WAYBACK_RETENTION_KEEP_WITHIN"); ok {
		d, err := parseDuration(v)
		if err != nil {
			return fmt.Errorf("WAYBACK_RETENTION_KEEP_WITHIN=%q is not a duration (use e.g. 30d, 720h)", v)
		}
		c.Retention.KeepWithin = Duration(d)
	}
	str("WAYBACK_VERIFY_SCRATCH_DSN", &c.Verify.ScratchDSN)
	str("WAYBACK_METRICS_LISTEN", &c.Metrics.Listen)
	if v, ok := lookup("WAYBACK_SLOT_MAX_RETAINED"); ok {
		s, err := ParseByteSize(v)
		if err != nil {
			return fmt.Errorf("WAYBACK_SLOT_MAX_RETAINED: %w", err)
		}
		c.Slot.MaxRetained = s
	}
	str("WAYBACK_ENCRYPTION_KEY_FILE", &c.Encryption.KeyFile)
	str("WAYBACK_ENCRYPTION_KEY_ENV", &c.Encryption.KeyEnv)
	if v, ok := lookup("WAYBACK_ENCRYPTION_OLD_KEY_FILES"); ok {
		c.Encryption.OldKeyFiles = SplitList(v)
	}
	if v, ok := lookup("WAYBACK_STORES"); ok {
		c.Stores = SplitList(v)
	}
	if v, ok := lookup("WAYBACK_MIN_COPIES"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("WAYBACK_MIN_COPIES=%q is not a number", v)
		}
		c.MinCopies = n
	}
	if v, ok := lookup("WAYBACK_FLUSH_INTERVAL"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("WAYBACK_FLUSH_INTERVAL=%q is not a duration (use e.g. 1s)", v)
		}
		c.FlushInterval = Duration(d)
	}
	if v, ok := lookup("WAYBACK_MAX_SEGMENT_SIZE"); ok {
		s, err := ParseByteSize(v)
		if err != nil {
			return fmt.Errorf("WAYBACK_MAX_SEGMENT_SIZE: %w", err)
		}
		c.MaxSegment = s
	}
	if v, ok := lookup("WAYBACK_BASEBACKUP_PARALLEL"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("WAYBACK_BASEBACKUP_PARALLEL=%q is not a number", v)
		}
		c.BaseBackup.Parallel = n
	}
	if v, ok := lookup("WAYBACK_BASEBACKUP_COPY_FORMAT"); ok {
		c.BaseBackup.CopyFormat = v
	}
	return nil
}

// SplitList splits a comma- or space-separated list.
func SplitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })
}

// Need names what a command requires, so that Validate can say exactly
// which key is missing.
type Need struct {
	DSN    bool
	Stores bool
	// Write: the command writes to the stores, so min_copies must fit them.
	Write bool
}

// Validate checks the keys a command needs and normalises the rest.
func (c *Config) Validate(need Need) error {
	if need.DSN && c.Postgres.DSN == "" {
		return errors.New("postgres.dsn is not set: set it in the config file, WAYBACK_POSTGRES_DSN or --dsn")
	}
	if need.Stores && len(c.Stores) == 0 {
		return errors.New("stores is empty: list at least one store URL (file:///dir, s3://bucket/prefix, gs://bucket/prefix) in the config file, WAYBACK_STORES or --store")
	}
	if c.Postgres.Slot == "" || c.Postgres.Publication == "" {
		return errors.New("postgres.slot and postgres.publication must not be empty")
	}
	if c.MinCopies == 0 || (!need.Write && c.MinCopies > len(c.Stores)) {
		c.MinCopies = len(c.Stores)
	}
	if need.Write && (c.MinCopies < 1 || c.MinCopies > len(c.Stores)) {
		return fmt.Errorf("min_copies is %d but %d stores are configured: it must be between 1 and the number of stores", c.MinCopies, len(c.Stores))
	}
	if c.FlushInterval <= 0 {
		return errors.New("flush_interval must be positive (e.g. 1s)")
	}
	if c.MaxSegment < 1<<16 {
		return errors.New("max_segment_size must be at least 64KiB")
	}
	if c.BaseBackup.Parallel < 1 {
		c.BaseBackup.Parallel = 1
	}
	switch c.BaseBackup.CopyFormat {
	case "":
		c.BaseBackup.CopyFormat = "auto"
	case "auto", "text":
	default:
		return fmt.Errorf("basebackup.copy_format is %q: use auto (binary where possible) or text", c.BaseBackup.CopyFormat)
	}
	if c.Encryption.KeyFile != "" && c.Encryption.KeyEnv != "" {
		return errors.New("encryption.key_file and encryption.key_env are both set: give the current key one way")
	}
	if len(c.Encryption.OldKeyFiles) > 0 && c.Encryption.KeyFile == "" && c.Encryption.KeyEnv == "" {
		return errors.New("encryption.old_key_files is set without a current key: set encryption.key_file or encryption.key_env too")
	}
	if s := c.BaseBackup.Schedule; s != "" && s != "off" {
		if _, err := ParseSchedule(s); err != nil {
			return fmt.Errorf("basebackup.schedule: %w (or \"off\")", err)
		}
	}
	r := c.Retention
	if r.Daily < 0 || r.Weekly < 0 || r.Monthly < 0 || r.Yearly < 0 || r.Last < 0 || r.KeepWithin < 0 {
		return errors.New("retention counts and keep_within must not be negative")
	}
	if c.Verify.Schedule != "" {
		if _, err := ParseSchedule(c.Verify.Schedule); err != nil {
			return fmt.Errorf("verify.schedule: %w", err)
		}
	}
	return nil
}

// scheduleParser reads standard 5-field cron expressions and descriptors
// such as @daily and @every 6h.
var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a cron expression ("30 3 * * *", "@daily",
// "@every 6h").
func ParseSchedule(spec string) (cron.Schedule, error) {
	s, err := scheduleParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%q is not a schedule (use a 5-field cron expression such as \"30 3 * * *\", or @daily, @every 6h): %v", spec, err)
	}
	return s, nil
}

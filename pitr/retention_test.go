package pitr

import (
	"slices"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/wal"
)

// daily returns one backup at 03:00 UTC on each of n days from first.
func dailyBackups(first time.Time, n int) []BackupRef {
	var out []BackupRef
	for i := 0; i < n; i++ {
		t := first.AddDate(0, 0, i).Add(3 * time.Hour)
		out = append(out, BackupRef{ID: t.Format("2006-01-02"), Time: t, LSN: wal.LSN(1000 * (i + 1))})
	}
	return out
}

func kept(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Keep {
			out = append(out, d.ID)
		}
	}
	slices.Sort(out)
	return out
}

// TestRetainGFS120Days: 120 daily backups (2026-01-01 .. 2026-04-30) under
// daily 7, weekly 4, monthly 3 keep the SLA's 14 backups. Worked out by
// hand from a calendar: daily keeps Apr 24..30. ISO weeks: W18 (Apr 27..)
// and W17 (Apr 20..26) have their newest (Apr 30, Apr 26) kept already, so
// they do not count; W16 → Apr 19, W15 → Apr 12, W14 → Apr 5, W13 → Mar 29.
// Months: April's newest is kept already; Mar → Mar 31, Feb → Feb 28,
// Jan → Jan 31.
func TestRetainGFS120Days(t *testing.T) {
	backups := dailyBackups(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 120)
	now := time.Date(2026, 4, 30, 12, 0, 0, 0, time.UTC)
	got := kept(Retain(backups, Policy{Daily: 7, Weekly: 4, Monthly: 3}, now))
	want := []string{"2026-01-31", "2026-02-28", "2026-03-29", "2026-03-31", "2026-04-05", "2026-04-12", "2026-04-19",
		"2026-04-24", "2026-04-25", "2026-04-26", "2026-04-27", "2026-04-28", "2026-04-29", "2026-04-30"}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v\nwant %v", got, want)
	}
}

// TestRetainSimulatedClock runs the policy every day for 120 days, the
// way the agent does after each daily backup, deleting what it expires.
// At every step the survivors must be exactly what one run over all
// backups so far keeps, and never more than daily+weekly+monthly+yearly.
func TestRetainSimulatedClock(t *testing.T) {
	all := dailyBackups(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 120)
	p := Policy{Daily: 7, Weekly: 4, Monthly: 3, Yearly: 1}
	var alive []BackupRef
	for day, b := range all {
		alive = append(alive, b)
		now := b.Time.Add(time.Hour)
		ds := Retain(alive, p, now)
		alive = alive[:0]
		for _, d := range ds {
			if d.Keep {
				alive = append(alive, BackupRef{ID: d.ID, Time: d.Time, LSN: d.LSN})
			}
		}
		slices.SortFunc(alive, func(a, b BackupRef) int { return a.Time.Compare(b.Time) })
		var ids []string
		for _, a := range alive {
			ids = append(ids, a.ID)
		}
		slices.Sort(ids)
		if once := kept(Retain(all[:day+1], p, now)); !slices.Equal(ids, once) {
			t.Fatalf("day %d: incremental expiry kept %v, one run keeps %v", day, ids, once)
		}
		if len(alive) > 7+4+3+1 {
			t.Fatalf("day %d: %d backups kept", day, len(alive))
		}
		if alive[len(alive)-1].ID != b.ID {
			t.Fatalf("day %d: the newest backup %s was expired", day, b.ID)
		}
	}
	// After 120 days the survivors are TestRetainGFS120Days's fourteen:
	// the yearly rule adds nothing, 2026's newest (Apr 30) being kept
	// already.
	if len(alive) != 14 {
		t.Fatalf("after 120 days %d backups survive, want 14", len(alive))
	}
}

func TestRetainKeepWithinAndNewest(t *testing.T) {
	backups := dailyBackups(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 40)
	now := time.Date(2026, 2, 9, 12, 0, 0, 0, time.UTC) // the newest is Feb 9 03:00
	got := kept(Retain(backups, Policy{KeepWithin: 3 * 24 * time.Hour}, now))
	want := []string{"2026-02-07", "2026-02-08", "2026-02-09"}
	if !slices.Equal(got, want) {
		t.Fatalf("keep_within 3d kept %v, want %v", got, want)
	}
	// Long after the last backup, keep_within alone would keep nothing:
	// the newest backup survives anyway.
	got = kept(Retain(backups, Policy{KeepWithin: 24 * time.Hour}, now.AddDate(1, 0, 0)))
	if !slices.Equal(got, []string{"2026-02-09"}) {
		t.Fatalf("kept %v, want only the newest", got)
	}
	got = kept(Retain(backups, Policy{Last: 2}, now))
	if !slices.Equal(got, []string{"2026-02-08", "2026-02-09"}) {
		t.Fatalf("last 2 kept %v", got)
	}
	// No policy: everything stays.
	if got := kept(Retain(backups, Policy{}, now)); len(got) != 40 {
		t.Fatalf("the zero policy kept %d of 40", len(got))
	}
}

// TestRetainSeveralPerDay: with several backups a day, only each day's
// newest counts for the daily rule.
func TestRetainSeveralPerDay(t *testing.T) {
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var bs []BackupRef
	for d := 0; d < 3; d++ {
		for h := 0; h < 24; h += 6 {
			at := base.AddDate(0, 0, d).Add(time.Duration(h) * time.Hour)
			bs = append(bs, BackupRef{ID: at.Format("01-02T15"), Time: at})
		}
	}
	got := kept(Retain(bs, Policy{Daily: 2}, base.AddDate(0, 0, 3)))
	if want := []string{"05-02T18", "05-03T18"}; !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}

func TestRetentionStateGone(t *testing.T) {
	st := &RetentionState{Floor: wal.LSN(0x5000).String(), Expired: []string{"old"}}
	for key, want := range map[string]bool{
		wal.SegmentKey(0x1000, 0x5000): true,  // ends at the floor
		wal.SegmentKey(0x4000, 0x6000): false, // crosses it: needed
		"backups/old/t1.copy.lz4":      true,
		"backups/old/manifest.json":    true,
		"backups/new/manifest.json":    false,
		"archive.json":                 false,
	} {
		if got := st.Gone(key); got != want {
			t.Errorf("Gone(%s) = %v, want %v", key, got, want)
		}
	}
	var none *RetentionState
	if none.Gone(wal.SegmentKey(1, 2)) {
		t.Error("a nil state expires nothing")
	}
}

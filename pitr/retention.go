package pitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Policy says which base backups to keep. A backup is kept when any rule
// keeps it, and the newest backup is always kept. The zero Policy keeps
// everything.
type Policy struct {
	// Daily, Weekly, Monthly and Yearly keep the newest backup of each of
	// the last N days, ISO weeks, months or years that have a backup
	// (periods in UTC). They apply in that order, and a backup kept by an
	// earlier rule does not count towards a later one, as in Borg.
	Daily, Weekly, Monthly, Yearly int
	// Last keeps the N newest backups.
	Last int
	// KeepWithin keeps every backup consistent less than this long ago.
	KeepWithin time.Duration
}

// IsZero reports whether the policy keeps everything.
func (p Policy) IsZero() bool { return p == Policy{} }

// Decision is the verdict on one backup.
type Decision struct {
	ID   string    `json:"id"`
	Time time.Time `json:"consistent_time"`
	LSN  wal.LSN   `json:"-"`
	Keep bool      `json:"keep"`
	// Reasons say which rules keep it ("daily 2026-11-20", "within 30d",
	// "newest"); empty when it expires.
	Reasons []string `json:"reasons,omitempty"`
}

// BackupRef is what retention needs to know of a backup.
type BackupRef struct {
	ID   string
	Time time.Time // consistent time
	LSN  wal.LSN   // consistent LSN
}

// Retain decides, for each backup, whether p keeps it at time now. It is
// a pure function of its arguments; decisions come newest first.
func Retain(backups []BackupRef, p Policy, now time.Time) []Decision {
	ds := make([]Decision, len(backups))
	for i, b := range backups {
		ds[i] = Decision{ID: b.ID, Time: b.Time, LSN: b.LSN}
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Time.After(ds[j].Time) })
	if len(ds) == 0 {
		return ds
	}
	keep := func(d *Decision, why string) {
		d.Keep = true
		d.Reasons = append(d.Reasons, why)
	}
	if p.IsZero() {
		for i := range ds {
			keep(&ds[i], "no retention policy")
		}
		return ds
	}
	keep(&ds[0], "newest")
	for i := 0; i < min(p.Last, len(ds)); i++ {
		keep(&ds[i], fmt.Sprintf("last %d", p.Last))
	}
	periods := []struct {
		name string
		n    int
		key  func(time.Time) string
	}{
		{"daily", p.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }},
		{"monthly", p.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time) string { return t.Format("2006") }},
	}
	// Rules apply from daily to yearly, and a backup an earlier rule kept
	// does not count towards a later one (Borg's counting): daily 7,
	// weekly 4, monthly 3 keeps 14 backups spanning about three months,
	// the figure hosting SLAs quote. A period whose newest backup is kept
	// already is used up all the same.
	for _, per := range periods {
		counted, last := 0, ""
		for i := range ds {
			if counted >= per.n {
				break
			}
			k := per.key(ds[i].Time.UTC())
			if k == last {
				continue // ds is newest first: the first of a period is its newest
			}
			last = k
			if len(ds[i].Reasons) > 0 && !(i == 0 && len(ds[i].Reasons) == 1 && ds[i].Reasons[0] == "newest") {
				continue
			}
			counted++
			keep(&ds[i], per.name+" "+k)
		}
	}
	if p.KeepWithin > 0 {
		for i := range ds {
			if now.Sub(ds[i].Time) < p.KeepWithin {
				keep(&ds[i], "within "+formatDays(p.KeepWithin))
			}
		}
	}
	return ds
}

func formatDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// RetentionKey names the object recording what retention has expired. It
// is written to every store before anything is deleted, so that a store
// being backfilled (store.Fanout.Repair) or verified knows that objects
// missing elsewhere are gone on purpose, and so that a run that was
// interrupted is finished by the next.
const RetentionKey = "retention.json"

// RetentionState is the content of retention.json.
type RetentionState struct {
	Version int `json:"version"`
	// Floor is the oldest kept backup's consistent LSN: segments ending at
	// or before it are not needed by any kept backup and may be deleted.
	Floor string `json:"floor_lsn"`
	// Expired lists the IDs of expired backups, whose objects may be
	// deleted and must never be copied back.
	Expired []string  `json:"expired"`
	Updated time.Time `json:"updated"`
}

// FloorLSN parses Floor (0 when unset).
func (s *RetentionState) FloorLSN() wal.LSN {
	if s == nil || s.Floor == "" {
		return 0
	}
	l, _ := wal.ParseLSN(s.Floor)
	return l
}

// Gone reports whether key belongs to something retention expired: a
// segment at or below the floor or an object of an expired backup.
func (s *RetentionState) Gone(key string) bool {
	if s == nil {
		return false
	}
	if strings.HasPrefix(key, wal.SegmentPrefix) {
		_, to, err := wal.ParseSegmentKey(key)
		return err == nil && to <= s.FloorLSN()
	}
	if rest, ok := strings.CutPrefix(key, basebackup.Prefix); ok {
		id, _, _ := strings.Cut(rest, "/")
		return slices.Contains(s.Expired, id)
	}
	return false
}

// ReadRetentionState merges retention.json from every store that has
// one: the highest floor and the union of expired backups; nil when no
// store has one. A store that cannot be read is skipped and reported in
// the error, beside what the others hold.
func ReadRetentionState(ctx context.Context, stores []store.Store) (*RetentionState, error) {
	var merged *RetentionState
	var errs []error
	for _, s := range stores {
		b, err := store.ReadAll(ctx, s, RetentionKey)
		var st RetentionState
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s from %s: %w", RetentionKey, s.URL(), err))
			continue
		}
		if merged == nil {
			merged = &RetentionState{Version: 1}
		}
		if st.FloorLSN() > merged.FloorLSN() {
			merged.Floor = st.Floor
		}
		for _, id := range st.Expired {
			if !slices.Contains(merged.Expired, id) {
				merged.Expired = append(merged.Expired, id)
			}
		}
		if st.Updated.After(merged.Updated) {
			merged.Updated = st.Updated
		}
	}
	if merged != nil {
		slices.Sort(merged.Expired)
	}
	return merged, errors.Join(errs...)
}

// ExpiryPlan is what one retention run keeps and deletes.
type ExpiryPlan struct {
	Policy    Policy     `json:"-"`
	Decisions []Decision `json:"backups"`
	// Floor is the oldest kept backup's consistent LSN.
	Floor wal.LSN `json:"-"`
	// Segments are the keys of segments that end at or before Floor.
	Segments []string `json:"expired_segments"`
	// Orphans are backup objects without a manifest in any store that
	// are safe to delete: of an expired backup, or older than OrphanAge
	// (an interrupted backup that will never finish).
	Orphans []string `json:"orphans"`
	// Bytes is the total size of what will be deleted, in the store
	// holding the most of it.
	Bytes int64 `json:"bytes"`
}

// OrphanAge is how old backup objects without a manifest must be before
// retention deletes them: younger ones may belong to a backup in
// progress, which writes its manifest last.
const OrphanAge = 24 * time.Hour

// Expired returns the decisions that expire.
func (p *ExpiryPlan) Expired() []Decision {
	var out []Decision
	for _, d := range p.Decisions {
		if !d.Keep {
			out = append(out, d)
		}
	}
	return out
}

// PlanExpiry decides what the policy expires in the catalog at time now.
// prior is the retention state already on the stores (nil: none).
func (c *Catalog) PlanExpiry(ctx context.Context, p Policy, now time.Time, prior *RetentionState) (*ExpiryPlan, error) {
	refs := make([]BackupRef, len(c.Backups))
	for i, b := range c.Backups {
		refs[i] = BackupRef{ID: b.ID, Time: b.ConsistentTime, LSN: b.LSN()}
	}
	plan := &ExpiryPlan{Policy: p, Decisions: Retain(refs, p, now)}
	expired := map[string]bool{}
	for _, id := range prior.expiredIDs() {
		expired[id] = true
	}
	for i := range plan.Decisions {
		d := &plan.Decisions[i]
		if d.Keep && expired[d.ID] && i > 0 {
			// An earlier run expired it and may have deleted part of it
			// already: it stays expired (rules only ever expire more).
			d.Keep, d.Reasons = false, nil
		}
	}
	for _, d := range plan.Decisions {
		if d.Keep && (plan.Floor == 0 || d.LSN < plan.Floor) {
			plan.Floor = d.LSN
		}
		if !d.Keep {
			expired[d.ID] = true
		}
	}
	if plan.Floor == 0 { // no backups at all: delete nothing
		return plan, nil
	}
	if f := prior.FloorLSN(); f > plan.Floor {
		// A backup older than an earlier floor cannot exist any more; keep
		// the earlier, higher floor rather than lowering it.
		plan.Floor = f
	}
	perStore := make([]int64, len(c.Stores))
	for _, s := range c.Segments {
		if s.To <= plan.Floor {
			plan.Segments = append(plan.Segments, s.Key)
			for _, i := range s.Stores {
				perStore[i] += s.Size
			}
		}
	}
	manifests := map[string]bool{}
	for _, b := range c.Backups {
		manifests[b.ID] = true
	}
	seen := map[string]bool{}
	for i, st := range c.Stores {
		objs, err := st.List(ctx, basebackup.Prefix)
		if err != nil {
			return nil, fmt.Errorf("list backups in %s: %w (retention needs every store)", st.URL(), err)
		}
		for _, o := range objs {
			rest, _ := strings.CutPrefix(o.Key, basebackup.Prefix)
			id, _, _ := strings.Cut(rest, "/")
			if (manifests[id] && !expired[id]) || (!expired[id] && now.Sub(o.Modified) < OrphanAge) {
				continue
			}
			perStore[i] += o.Size
			if manifests[id] || seen[o.Key] {
				continue // objects of expired backups with manifests go with them
			}
			seen[o.Key] = true
			plan.Orphans = append(plan.Orphans, o.Key)
		}
	}
	sort.Strings(plan.Orphans)
	plan.Bytes = slices.Max(append(perStore, 0))
	return plan, nil
}

func (s *RetentionState) expiredIDs() []string {
	if s == nil {
		return nil
	}
	return s.Expired
}

// ExpireOptions configure Expire.
type ExpireOptions struct {
	Log *zap.Logger
	// Now is the time the plan was made at (the state's Updated).
	Now time.Time
}

// ExpireResult counts what Expire deleted.
type ExpireResult struct {
	Backups  int `json:"backups"`
	Objects  int `json:"objects"`
	Segments int `json:"segments"`
}

// Expire carries out a plan on every store, in an order that leaves a
// restorable archive at every step, so that an interrupted run (crash,
// kill, failing store) does no harm and the next run finishes it:
//
//  1. retention.json with the new floor and the expired backups goes to
//     every store first, so that backfill never copies back what is being
//     deleted and verify knows it is gone on purpose;
//  2. each expired backup's manifest is deleted from every store before
//     any of its data objects, so no store ever shows a backup that lacks
//     objects;
//  3. its data objects, and orphaned backup objects;
//  4. segments ending at or before the floor, oldest first, so what is
//     left is always a contiguous chain up to the newest segment.
//
// Deleting a key that is already gone is not an error.
func Expire(ctx context.Context, c *Catalog, plan *ExpiryPlan, prior *RetentionState, o ExpireOptions) (*ExpireResult, error) {
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	res := &ExpireResult{}
	expired := plan.Expired()
	if len(expired) == 0 && len(plan.Segments) == 0 && len(plan.Orphans) == 0 {
		return res, nil
	}
	st := RetentionState{Version: 1, Floor: plan.Floor.String(), Expired: prior.expiredIDs(), Updated: o.Now.UTC()}
	for _, d := range expired {
		if !slices.Contains(st.Expired, d.ID) {
			st.Expired = append(st.Expired, d.ID)
		}
	}
	slices.Sort(st.Expired)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return res, err
	}
	for _, s := range c.Stores {
		if err := store.PutBytes(ctx, s, RetentionKey, b); err != nil {
			return res, fmt.Errorf("write %s to %s (nothing deleted yet): %w", RetentionKey, s.URL(), err)
		}
	}
	del := func(key string) error {
		for _, s := range c.Stores {
			if err := s.Delete(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("delete %s from %s: %w (run retention again to finish)", key, s.URL(), err)
			}
		}
		return nil
	}
	for _, d := range expired {
		if err := del(basebackup.ManifestKey(d.ID)); err != nil {
			return res, err
		}
		res.Backups++
		log.Info("expired base backup", zap.String("backup", d.ID), zap.Time("consistent_time", d.Time))
		for _, s := range c.Stores {
			objs, err := s.List(ctx, basebackup.Prefix+d.ID+"/")
			if err != nil {
				return res, fmt.Errorf("list backup %s in %s: %w (run retention again to finish)", d.ID, s.URL(), err)
			}
			for _, obj := range objs {
				if err := s.Delete(ctx, obj.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
					return res, fmt.Errorf("delete %s from %s: %w (run retention again to finish)", obj.Key, s.URL(), err)
				}
				res.Objects++
			}
		}
	}
	for _, k := range plan.Orphans {
		if err := del(k); err != nil {
			return res, err
		}
		res.Objects++
	}
	for _, k := range plan.Segments { // Catalog.Segments is in LSN order
		if err := del(k); err != nil {
			return res, err
		}
		res.Segments++
	}
	if res.Segments > 0 {
		log.Info("expired segments", zap.Int("segments", res.Segments), zap.String("below_lsn", plan.Floor.String()))
	}
	return res, nil
}

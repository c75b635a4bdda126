// Package pitr is wayback's catalog: it lists what each store holds, plans
// a restore (which base backup, which segments reach the target) and proves
// the segment chain has no gap. It needs nothing but the stores themselves
// (DESIGN invariant 4).
package pitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// ArchiveKey names the object identifying which database an archive is of.
const ArchiveKey = "archive.json"

// ArchiveVersion is the archive layout version (docs/FORMAT.md). Version 2
// added optional encryption at rest (keys/ and encrypted objects); version
// 1 archives are read unchanged.
const ArchiveVersion = 2

// ArchiveInfo is the content of archive.json.
type ArchiveInfo struct {
	Format   string    `json:"format"` // "wayback"
	Version  int       `json:"version"`
	SystemID string    `json:"system_identifier"`
	Database string    `json:"database"`
	Created  time.Time `json:"created"`
}

// Backup is a complete base backup and the stores holding its manifest.
type Backup struct {
	*basebackup.Manifest
	Stores []int // indexes into Catalog.Stores
}

// Segment is one archived segment and the stores holding it.
type Segment struct {
	Key      string
	From, To wal.LSN
	Size     int64
	Stores   []int
}

// StoreListing summarises one store.
type StoreListing struct {
	URL      string
	Err      error // the store could not be listed
	Backups  int
	Segments int
	Bytes    int64
}

// Catalog is the union of what every store holds.
type Catalog struct {
	Stores   []store.Store
	Backups  []*Backup  // by consistent LSN, oldest first
	Segments []*Segment // by From, then To
	Listings []StoreListing
	log      *zap.Logger
}

// Load lists every store. A store that cannot be listed is recorded in
// Listings and skipped; Load fails only when no store can be listed.
func Load(ctx context.Context, stores []store.Store, log *zap.Logger) (*Catalog, error) {
	if log == nil {
		log = zap.NewNop()
	}
	c := &Catalog{Stores: stores, log: log}
	segs := map[string]*Segment{}
	manifestStores := map[string][]int{}
	listed := 0
	for i, s := range stores {
		l := StoreListing{URL: s.URL()}
		objs, err := s.List(ctx, "")
		if err != nil {
			l.Err = err
			c.Listings = append(c.Listings, l)
			log.Warn("cannot list store", zap.String("store", s.URL()), zap.Error(err))
			continue
		}
		listed++
		for _, o := range objs {
			l.Bytes += o.Size
			switch {
			case strings.HasPrefix(o.Key, wal.SegmentPrefix):
				from, to, err := wal.ParseSegmentKey(o.Key)
				if err != nil {
					continue
				}
				seg, ok := segs[o.Key]
				if !ok {
					seg = &Segment{Key: o.Key, From: from, To: to, Size: o.Size}
					segs[o.Key] = seg
				}
				seg.Stores = append(seg.Stores, i)
				l.Segments++
			case basebackup.IDFromKey(o.Key) != "":
				id := basebackup.IDFromKey(o.Key)
				manifestStores[id] = append(manifestStores[id], i)
				l.Backups++
			}
		}
		c.Listings = append(c.Listings, l)
	}
	if listed == 0 && len(stores) > 0 {
		return nil, fmt.Errorf("no store could be listed: %w", c.Listings[0].Err)
	}
	for id, idx := range manifestStores {
		m, err := c.readManifest(ctx, id, idx)
		if err != nil {
			log.Warn("skipping unreadable backup", zap.String("backup", id), zap.Error(err))
			continue
		}
		c.Backups = append(c.Backups, &Backup{Manifest: m, Stores: idx})
	}
	sort.Slice(c.Backups, func(i, j int) bool { return c.Backups[i].LSN() < c.Backups[j].LSN() })
	for _, s := range segs {
		c.Segments = append(c.Segments, s)
	}
	sort.Slice(c.Segments, func(i, j int) bool {
		a, b := c.Segments[i], c.Segments[j]
		return a.From < b.From || (a.From == b.From && a.To < b.To)
	})
	return c, nil
}

func (c *Catalog) readManifest(ctx context.Context, id string, idx []int) (*basebackup.Manifest, error) {
	var errs []error
	for _, i := range idx {
		b, err := store.ReadAll(ctx, c.Stores[i], basebackup.ManifestKey(id))
		if err == nil {
			var m *basebackup.Manifest
			if m, err = basebackup.ParseManifest(b); err == nil {
				return m, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", c.Stores[i].URL(), err))
	}
	return nil, errors.Join(errs...)
}

// Chain returns the segments that cover the stream contiguously from
// start, and the position where coverage ends. Overlapping segments (left
// by a crash and restart) are fine: the one reaching furthest is taken at
// each step, and replay skips transactions it has already applied.
func (c *Catalog) Chain(start wal.LSN) (chain []*Segment, end wal.LSN) {
	end = start
	for {
		var best *Segment
		for _, s := range c.Segments {
			if s.From > end {
				break
			}
			if s.To > end && (best == nil || s.To > best.To) {
				best = s
			}
		}
		if best == nil {
			return chain, end
		}
		chain = append(chain, best)
		end = best.To
	}
}

// NextAfter returns the first segment starting after pos: when a chain
// ends before the newest segment, the two bound the gap.
func (c *Catalog) NextAfter(pos wal.LSN) *Segment {
	for _, s := range c.Segments {
		if s.From > pos {
			return s
		}
	}
	return nil
}

// ReadArchiveInfo returns archive.json from the first store holding it,
// or nil if no store does.
func ReadArchiveInfo(ctx context.Context, stores []store.Store) (*ArchiveInfo, error) {
	for _, s := range stores {
		b, err := store.ReadAll(ctx, s, ArchiveKey)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var a ArchiveInfo
		if err := json.Unmarshal(b, &a); err != nil {
			return nil, fmt.Errorf("decode %s in %s: %w", ArchiveKey, s.URL(), err)
		}
		if a.Version > ArchiveVersion {
			return nil, fmt.Errorf("archive in %s has layout version %d; this wayback reads up to %d: upgrade wayback", s.URL(), a.Version, ArchiveVersion)
		}
		return &a, nil
	}
	return nil, nil
}

// CheckObject validates an archive object's content where its key says what
// it must be (segments: header and body checksums; manifests: they parse),
// so that repair never copies a corrupt object to another store.
func CheckObject(key string, data []byte) error {
	switch {
	case strings.HasPrefix(key, wal.SegmentPrefix):
		info, _, err := wal.DecodeSegment(data)
		if err != nil {
			return err
		}
		if from, to, err := wal.ParseSegmentKey(key); err != nil || from != info.From || to != info.To {
			return fmt.Errorf("%w: header range %s-%s does not match key %s", wal.ErrCorrupt, info.From, info.To, key)
		}
	case basebackup.IDFromKey(key) != "":
		_, err := basebackup.ParseManifest(data)
		return err
	}
	return nil
}

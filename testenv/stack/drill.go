package stack

import (
	"context"
	"fmt"
	"testing"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/testenv"
)

// CheckRestoresTo restores the archive in stores to target into targetDSN
// (a database that does not exist yet or is empty) and compares every
// table's checksum with want (from testenv.Checksums on the source at that
// instant). It returns nil when they are equal; otherwise an error naming
// what failed: the restore itself (a gap in the archive is reported with
// its LSN range and the reason no store covers it) or each table that
// differs.
func CheckRestoresTo(ctx context.Context, stores []string, target wayback.Target, targetDSN string, want map[string]testenv.TableSum) error {
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: stores})
	if err != nil {
		return fmt.Errorf("restore drill: open the archive: %w", err)
	}
	defer arc.Close()
	// A restore to the latest point replays as far as the chain from the
	// base backup reaches and stops quietly at a hole; a drill must not.
	if target.Kind == pitr.Latest {
		cat, err := arc.Catalog(ctx)
		if err != nil {
			return fmt.Errorf("restore drill: list the archive: %w", err)
		}
		plan, err := cat.Plan(target)
		if err != nil {
			return fmt.Errorf("restore drill: plan: %w", err)
		}
		if next := cat.NextAfter(plan.End); next != nil {
			return fmt.Errorf("restore drill: the archive has a gap from LSN %s to %s: no store holds a segment covering it, so nothing after it can be restored", plan.End, next.From)
		}
	}
	if _, err := arc.Restore(ctx, wayback.RestoreOptions{TargetDSN: targetDSN, Target: target}); err != nil {
		return fmt.Errorf("restore drill: restore failed: %w", err)
	}
	got, err := testenv.Checksums(ctx, targetDSN)
	if err != nil {
		return fmt.Errorf("restore drill: checksums of the restored database: %w", err)
	}
	if d := testenv.DiffChecksums(want, got); d != "" {
		return fmt.Errorf("restore drill: the restored database differs from the source:\n%s", d)
	}
	return nil
}

// AssertRestoresTo is CheckRestoresTo failing t.
func AssertRestoresTo(t testing.TB, stores []string, target wayback.Target, targetDSN string, want map[string]testenv.TableSum) {
	t.Helper()
	if err := CheckRestoresTo(t.Context(), stores, target, targetDSN, want); err != nil {
		t.Fatal(err)
	}
}

// CheckRestoresTo restores the stack's archive (stores, or all of the
// stack's stores when nil) to target into a database on a fresh PostgreSQL
// server and compares its checksums with want.
func (s *Stack) CheckRestoresTo(ctx context.Context, t testing.TB, stores []string, target wayback.Target, want map[string]testenv.TableSum) error {
	if stores == nil {
		stores = s.Stores()
	}
	dsn, err := s.NewDatabase(ctx, t, "restored")
	if err != nil {
		return fmt.Errorf("restore drill: %w", err)
	}
	return CheckRestoresTo(ctx, stores, target, dsn, want)
}

// AssertRestoresTo is Stack.CheckRestoresTo failing t.
func (s *Stack) AssertRestoresTo(t testing.TB, stores []string, target wayback.Target, want map[string]testenv.TableSum) {
	t.Helper()
	if err := s.CheckRestoresTo(t.Context(), t, stores, target, want); err != nil {
		t.Fatal(err)
	}
}

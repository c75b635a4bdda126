// Package wayback is the Go API of wayback, point-in-time recovery for
// PostgreSQL from its logical change stream. It offers what the command
// line does — set up a source, run the agent, take a base backup, read the
// log of archived transactions, restore to an instant (leaving out chosen
// transactions), write undo SQL, verify an archive — for programs and
// tests that embed wayback. The wayback command is a thin layer over it.
//
// Everything starts from an Archive, the set of stores that hold one
// source's change stream and base backups:
//
//	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{
//		Stores: []string{"s3://backups/shop", "gs://backups-eu/shop"},
//	})
//	if err != nil { … }
//	defer arc.Close()
//	res, err := arc.Restore(ctx, wayback.RestoreOptions{
//		TargetDSN: "postgres://…/shop_restored",
//		Target:    wayback.AtTime(accident.Add(-time.Second)),
//	})
//
// Errors carry a complete message meant for a person; the kinds a program
// may want to branch on are exported below (ErrNoBackup, ErrGap, …) and
// match with errors.Is or errors.As.
package wayback

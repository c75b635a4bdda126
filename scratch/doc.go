// Package scratch provides throwaway PostgreSQL databases: restore drills
// (wayback verify --deep) and takeouts (wayback export) restore an instant
// into one, read it and throw it away, and the tests (package testenv) run
// against the same kind of cluster.
//
// A scratch database is either one the user names (a DSN whose database
// does not exist yet, or exists and is empty) or a database in a private
// cluster started from local PostgreSQL binaries: initdb in a temporary
// directory, a free port on 127.0.0.1, trust authentication, and, when
// running as root, an unprivileged user (postgres, else nobody) to run the
// server, because PostgreSQL refuses root.
package scratch

package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback/agent"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
)

// statusReport is `wayback status` at a glance.
type statusReport struct {
	Slot            string             `json:"slot"`
	SlotStatus      string             `json:"slot_wal_status,omitempty"` // reserved ... lost, missing
	SlotRetained    int64              `json:"slot_retained_bytes"`
	SlotError       string             `json:"slot_error,omitempty"`
	LagBytes        *int64             `json:"lag_bytes,omitempty"` // server WAL end - newest archived position
	Agent           map[string]float64 `json:"agent_metrics,omitempty"`
	AgentError      string             `json:"agent_error,omitempty"`
	NewestBackup    *time.Time         `json:"newest_backup,omitempty"`
	NewestBackupAge string             `json:"newest_backup_age,omitempty"`
	Stores          []storeStatus      `json:"stores"`
}

type storeStatus struct {
	URL        string `json:"url"`
	Error      string `json:"error,omitempty"`
	Segments   int    `json:"segments"`
	NewestEnd  string `json:"newest_segment_end,omitempty"`
	NewestUnix *int64 `json:"last_durable_commit_unix,omitempty"` // from the agent's metrics
}

func statusCmd(g *globals) *cobra.Command {
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the slot, lag, newest backup and each store's newest data at a glance",
		Long: `Status queries the slot on the source (retained WAL, wal_status) and lists the
stores (newest segment per store, newest base backup). When metrics.listen
(or --metrics) names a running agent, its lag and per-store newest durable
commit are read from its /metrics endpoint too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			if metricsAddr == "" {
				metricsAddr = e.cfg.Metrics.Listen
			}
			rep := statusReport{Slot: e.cfg.Postgres.Slot}
			cat, err := pitr.Load(ctx, e.stores, e.log)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			var archived uint64
			for i, l := range cat.Listings {
				ss := storeStatus{URL: store.Redact(l.URL), Segments: l.Segments}
				if l.Err != nil {
					ss.Error = l.Err.Error()
				}
				for _, s := range cat.Segments {
					for _, si := range s.Stores {
						if si == i {
							ss.NewestEnd = s.To.String()
							archived = max(archived, uint64(s.To))
						}
					}
				}
				rep.Stores = append(rep.Stores, ss)
			}
			if n := len(cat.Backups); n > 0 {
				t := cat.Backups[n-1].FinishedAt
				rep.NewestBackup = &t
				rep.NewestBackupAge = time.Since(t).Round(time.Second).String()
			}
			if e.cfg.Postgres.DSN != "" {
				slotStatus(ctx, e.cfg, &rep, archived)
			} else {
				rep.SlotError = "postgres.dsn not set"
			}
			if metricsAddr != "" {
				m, err := scrapeMetrics(ctx, metricsAddr)
				if err != nil {
					rep.AgentError = err.Error()
				} else {
					rep.Agent = m
					for i := range rep.Stores {
						if v, ok := m[`wayback_last_durable_commit_timestamp_seconds{store="`+rep.Stores[i].URL+`"}`]; ok && v > 0 {
							u := int64(v)
							rep.Stores[i].NewestUnix = &u
						}
					}
				}
			}
			if g.jsonOut {
				return printJSON(rep)
			}
			printStatus(rep)
			return nil
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics", "", "host:port of a running agent's metrics endpoint (default metrics.listen)")
	return cmd
}

func slotStatus(ctx context.Context, cfg config.Config, rep *statusReport, archived uint64) {
	conn, err := pgx.Connect(ctx, cfg.Postgres.DSN)
	if err != nil {
		rep.SlotError = fmt.Sprintf("connect to source: %v", err)
		return
	}
	defer conn.Close(context.Background())
	si, err := agent.ReadSlot(ctx, conn, cfg.Postgres.Slot)
	if err != nil {
		rep.SlotError = err.Error()
		return
	}
	rep.SlotStatus, rep.SlotRetained = si.WALStatus, si.Retained
	if archived > 0 && uint64(si.ServerLSN) >= archived {
		lag := int64(uint64(si.ServerLSN) - archived)
		rep.LagBytes = &lag
	}
}

// scrapeMetrics reads the wayback_* samples of an agent's /metrics.
func scrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read agent metrics at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "wayback_") || strings.Contains(line, "_bucket{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

func printStatus(r statusReport) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	switch {
	case r.SlotError != "":
		fmt.Fprintf(w, "slot %s\tunknown: %s\n", r.Slot, r.SlotError)
	default:
		fmt.Fprintf(w, "slot %s\t%s, retains %s of WAL\n", r.Slot, r.SlotStatus, human(r.SlotRetained))
	}
	if r.LagBytes != nil {
		fmt.Fprintf(w, "archive behind server\t%s\n", human(*r.LagBytes))
	}
	if r.Agent != nil {
		fmt.Fprintf(w, "agent\tstreaming=%v, lag %s / %.1fs\n", r.Agent["wayback_streaming"] == 1, human(int64(r.Agent["wayback_replication_lag_bytes"])), r.Agent["wayback_replication_lag_seconds"])
	} else if r.AgentError != "" {
		fmt.Fprintf(w, "agent\tunreachable: %s\n", r.AgentError)
	}
	if r.NewestBackup != nil {
		fmt.Fprintf(w, "newest base backup\t%s (%s ago)\n", r.NewestBackup.Format(time.RFC3339), r.NewestBackupAge)
	} else {
		fmt.Fprintf(w, "newest base backup\tnone\n")
	}
	fmt.Fprintln(w, "STORE\tSEGMENTS\tNEWEST END\tNEWEST DURABLE COMMIT")
	for _, s := range r.Stores {
		commit := "-"
		if s.NewestUnix != nil {
			commit = time.Unix(*s.NewestUnix, 0).UTC().Format(time.RFC3339)
		}
		if s.Error != "" {
			fmt.Fprintf(w, "%s\tunreachable: %s\t\t\n", s.URL, s.Error)
			continue
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", s.URL, s.Segments, s.NewestEnd, commit)
	}
	w.Flush()
}

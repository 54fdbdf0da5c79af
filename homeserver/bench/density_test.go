package bench_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/homeserver/bench"
)

const adminToken = "bench-admin-token-0123456789"

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q is not a positive integer", name, v)
	}
	return n
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q is not a positive duration", name, v)
	}
	return d
}

// progress prints while the benchmark runs; b.Log output only appears at its end.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// BenchmarkDensity fills one shard (a separate atoll-homeserver process) with
// ATOLL_BENCH_TENANTS tenants (default 1000) of 5 users, a DM and a group room each, measures
// the shard's and PostgreSQL's memory before and after, runs a light send + /sync load on
// ATOLL_BENCH_ACTIVE tenants (default 50) for ATOLL_BENCH_LOAD (default 60s), then waits for
// idle tenants to be evicted (tenants.idle_evict = ATOLL_BENCH_IDLE_EVICT, default 30s) and
// measures again. It runs the whole scenario once whatever b.N is. See docs/benchmarks.md.
func BenchmarkDensity(b *testing.B) {
	pgURL := os.Getenv("ATOLL_TEST_POSTGRES_URL")
	if pgURL == "" {
		if os.Getenv("ATOLL_TEST_REQUIRE_SERVICES") == "1" {
			b.Fatal("ATOLL_TEST_POSTGRES_URL is not set")
		}
		b.Skip("ATOLL_TEST_POSTGRES_URL is not set")
	}
	nTenants := envInt(b, "ATOLL_BENCH_TENANTS", 1000)
	nActive := min(envInt(b, "ATOLL_BENCH_ACTIVE", 50), nTenants)
	workers := envInt(b, "ATOLL_BENCH_WORKERS", 8)
	loadFor := envDuration(b, "ATOLL_BENCH_LOAD", 60*time.Second)
	idleEvict := envDuration(b, "ATOLL_BENCH_IDLE_EVICT", 30*time.Second)
	const maxConns = 20

	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Minute)
	defer cancel()
	benchStart := time.Now()

	// A database of its own, so its size and the shard's control schema are the bench's only.
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	dbName := fmt.Sprintf("atoll_bench_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
			b.Logf("drop database %s: %v", dbName, err)
		}
	})
	u, err := url.Parse(pgURL)
	if err != nil {
		b.Fatal(err)
	}
	u.Path = "/" + dbName
	dbConn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dbConn.Close(context.Background()) }) // before the database is dropped

	dir := b.TempDir()
	progress("building atoll-homeserver")
	bin, err := bench.BuildShard(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	shard, err := bench.StartShard(ctx, bench.ShardConfig{Binary: bin, Dir: dir, DatabaseURL: u.String(),
		AdminToken: adminToken, IdleEvict: idleEvict, MaxConns: maxConns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := shard.Stop(); err != nil {
			b.Logf("shard stop: %v", err)
		}
	})
	h := bench.NewHTTP(shard, adminToken, 4*nActive+2*workers+16)
	snap := func(label string) bench.Snapshot {
		b.Helper()
		s, err := bench.TakeSnapshot(ctx, label, shard, conn, dbConn, dbName)
		if err != nil {
			b.Fatal(err)
		}
		progress("%s: shard RSS %.1f MiB, PostgreSQL PSS %.1f MiB, %d tenants loaded", label,
			float64(s.ShardRSS)/bench.MiB, float64(s.PG.PSS)/bench.MiB, s.TenantsLoaded)
		return s
	}
	time.Sleep(2 * time.Second)
	before := snap("before")

	b.ResetTimer()
	progress("populating %d tenants with %d workers", nTenants, workers)
	var pst bench.PopulateStats
	tenants, err := bench.Populate(ctx, h, nTenants, workers, &pst, func(done int) {
		if done%100 == 0 {
			progress("%d tenants populated", done)
		}
	})
	if err != nil {
		b.Fatalf("populate: %v (shard log %s)", err, shard.LogPath)
	}
	populated := snap("populated")

	var touch bench.Latencies
	touchStart := time.Now()
	if err := bench.Touch(ctx, h, tenants, workers, &touch); err != nil {
		b.Fatal(err)
	}
	touchWall := time.Since(touchStart)
	allLoaded := snap("all loaded")

	progress("load: %d active tenants for %s", nActive, loadFor)
	res, err := bench.RunLoad(ctx, h, bench.LoadConfig{Tenants: tenants[:nActive], Duration: loadFor,
		MinInterval: time.Second, MaxInterval: 2 * time.Second, SyncTimeout: 30 * time.Second, Grace: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	afterLoad := snap("after load")

	progress("waiting for idle tenants to be evicted (idle_evict %s)", idleEvict)
	deadline := time.Now().Add(2*idleEvict + 30*time.Second)
	for time.Now().Before(deadline) {
		m, err := bench.ScrapeMetrics(ctx, shard.MetricsURL)
		if err != nil {
			b.Fatal(err)
		}
		if m["atoll_homeserver_tenants_loaded"] == 0 {
			break
		}
		time.Sleep(2 * time.Second)
	}
	evicted := snap("evicted")
	b.StopTimer()

	if res.SendErrors > 0 || res.SyncErrors > 0 {
		b.Errorf("load errors: %d sends, %d syncs; first: %v", res.SendErrors, res.SyncErrors, res.FirstErr)
	}
	send, wake := res.Send.Summary(), res.Wake.Summary()
	n := float64(nTenants)
	perTenant := func(after, before int64) float64 { return float64(after-before) / bench.MiB / n }
	b.ReportMetric(perTenant(allLoaded.ShardRSS, before.ShardRSS), "rss-MiB/tenant")
	b.ReportMetric(perTenant(allLoaded.PG.PSS, before.PG.PSS), "pg-MiB/tenant")
	b.ReportMetric(float64(allLoaded.ShardRSS+allLoaded.PG.PSS)/bench.MiB/n, "total-MiB/tenant")
	b.ReportMetric(perTenant(evicted.ShardRSS, before.ShardRSS), "idle-rss-MiB/tenant")
	b.ReportMetric(perTenant(allLoaded.DBSize, before.DBSize), "db-MiB/tenant")
	b.ReportMetric(bench.Ms(send.P50), "send-p50-ms")
	b.ReportMetric(bench.Ms(send.P99), "send-p99-ms")
	b.ReportMetric(bench.Ms(wake.P50), "wake-p50-ms")
	b.ReportMetric(bench.Ms(wake.P99), "wake-p99-ms")
	b.ReportMetric(pst.Wall.Seconds(), "populate-s")

	var sb strings.Builder
	fmt.Fprintf(&sb, "density: %d tenants x %d users, DM + group room each; idle_evict %s; database.max_conns %d; took %s\n",
		nTenants, bench.UsersPerTenant, idleEvict, maxConns, time.Since(benchStart).Round(time.Second))
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "snapshot\tshard RSS MiB\t/metrics RSS MiB\tGo heap inuse MiB\tgoroutines\ttenants loaded\tPG PSS MiB\tPG RSS MiB\tPG procs\tDB MiB\trelations\tshard CPU s\tPG CPU s\tloadavg\t")
	for _, s := range []bench.Snapshot{before, populated, allLoaded, afterLoad, evicted} {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%d\t%d\t%.1f\t%.1f\t%d\t%.1f\t%d\t%.1f\t%.1f\t%s\t\n", s.Label,
			float64(s.ShardRSS)/bench.MiB, float64(s.MetricsRSS)/bench.MiB, float64(s.HeapInuse)/bench.MiB, s.Goroutines,
			s.TenantsLoaded, float64(s.PG.PSS)/bench.MiB, float64(s.PG.RSS)/bench.MiB, s.PG.Processes, float64(s.DBSize)/bench.MiB,
			s.Relations, s.ShardCPU.Seconds(), s.PG.CPU.Seconds(), s.LoadAvg)
	}
	tw.Flush()
	fmt.Fprintf(&sb, "per tenant (all loaded - before)/%d: shard RSS %.3f MiB, PostgreSQL PSS %.3f MiB, database %.3f MiB\n", nTenants,
		perTenant(allLoaded.ShardRSS, before.ShardRSS), perTenant(allLoaded.PG.PSS, before.PG.PSS), perTenant(allLoaded.DBSize, before.DBSize))
	fmt.Fprintf(&sb, "relations per tenant schema %.0f; PostgreSQL PSS per process: before %.1f MiB, all loaded %.1f MiB, after load %.1f MiB\n",
		float64(allLoaded.Relations)/n, float64(before.PG.PSS)/bench.MiB/float64(before.PG.Processes),
		float64(allLoaded.PG.PSS)/bench.MiB/float64(allLoaded.PG.Processes), float64(afterLoad.PG.PSS)/bench.MiB/float64(afterLoad.PG.Processes))
	fmt.Fprintf(&sb, "per tenant absolute (shard RSS + PostgreSQL PSS)/%d: %.3f MiB (DESIGN target: under 4 MiB incl. sidecars)\n",
		nTenants, float64(allLoaded.ShardRSS+allLoaded.PG.PSS)/bench.MiB/n)
	fmt.Fprintf(&sb, "per tenant after eviction (evicted - before)/%d: shard RSS %.3f MiB, Go heap %.3f MiB\n", nTenants,
		perTenant(evicted.ShardRSS, before.ShardRSS), perTenant(evicted.HeapInuse, before.HeapInuse))
	row := func(name string, l *bench.Latencies) {
		s := l.Summary()
		fmt.Fprintf(&sb, "  %-22s n=%-6d p50 %8.1f ms  p99 %8.1f ms  max %8.1f ms\n", name, s.N, bench.Ms(s.P50), bench.Ms(s.P99), bench.Ms(s.Max))
	}
	fmt.Fprintf(&sb, "populate: %s wall (%d workers)\n", pst.Wall.Round(time.Millisecond), workers)
	row("create tenant", &pst.CreateTenant)
	row("register (bcrypt 10)", &pst.Register)
	row("createRoom", &pst.CreateRoom)
	row("join", &pst.Join)
	fmt.Fprintf(&sb, "touch (initial /sync of one user per tenant): %s wall\n", touchWall.Round(time.Millisecond))
	row("initial sync", &touch)
	fmt.Fprintf(&sb, "load: %d active tenants, 1 sender (every 1-2 s) + 4 long-polling receivers (timeout 30 s) each, %s\n", nActive, loadFor)
	row("send (PUT /send)", &res.Send)
	row("wake (send -> /sync)", &res.Wake)
	loadWall := afterLoad.Time.Sub(allLoaded.Time).Seconds()
	fmt.Fprintf(&sb, "  CPU during the load phase (%.0f s incl. initial syncs and grace): shard %.2f cores, PostgreSQL %.2f cores\n", loadWall,
		(afterLoad.ShardCPU-allLoaded.ShardCPU).Seconds()/loadWall, (afterLoad.PG.CPU-allLoaded.PG.CPU).Seconds()/loadWall)
	fmt.Fprintf(&sb, "  sent %d (errors %d), deliveries %d of %d expected, long-polls returned %d (errors %d)\n",
		res.Sent, res.SendErrors, res.Delivered, res.Expected, res.Syncs, res.SyncErrors)
	// go test trims a benchmark's b.Log output to ten lines: the whole report goes to stdout,
	// the headline figures to b.Log.
	fmt.Print(sb.String())
	b.Logf("%d tenants: shard RSS %.3f MiB/tenant, PostgreSQL PSS %.3f MiB/tenant, total %.3f MiB/tenant (target < 4); after eviction shard RSS %.3f MiB/tenant",
		nTenants, perTenant(allLoaded.ShardRSS, before.ShardRSS), perTenant(allLoaded.PG.PSS, before.PG.PSS),
		float64(allLoaded.ShardRSS+allLoaded.PG.PSS)/bench.MiB/n, perTenant(evicted.ShardRSS, before.ShardRSS))
	b.Logf("send p50 %.1f ms p99 %.1f ms; /sync wake-up p50 %.1f ms p99 %.1f ms (%d sends, %d deliveries)",
		bench.Ms(send.P50), bench.Ms(send.P99), bench.Ms(wake.P50), bench.Ms(wake.P99), send.N, wake.N)
}

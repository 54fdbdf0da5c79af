package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// MiB is 2^20 bytes.
const MiB = 1 << 20

// ProcMem is one process's memory from /proc: VmRSS from status, Pss from smaps_rollup.
type ProcMem struct {
	RSS, PSS int64 // bytes
}

// ReadProcMem reads /proc/<pid>/status and /proc/<pid>/smaps_rollup.
func ReadProcMem(pid int) (ProcMem, error) {
	var m ProcMem
	st, err := procFields(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	m.RSS = st["VmRSS"]
	sm, err := procFields(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m, err
	}
	m.PSS = sm["Pss"]
	return m, nil
}

// procFields reads "Key:   123 kB" lines into bytes (values without a unit are kept as is).
func procFields(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fs) > 1 && fs[1] == "kB" {
			n *= 1024
		}
		out[k] = n
	}
	return out, sc.Err()
}

// PostgresMem is the memory of one PostgreSQL cluster: the postmaster and all its children.
type PostgresMem struct {
	Processes int
	Backends  int           // client backends
	RSS       int64         // sum of VmRSS: counts shared_buffers pages once per process that touched them
	PSS       int64         // sum of Pss: shared pages divided among the processes sharing them
	CPU       time.Duration // user + system time of the live processes
}

// ReadPostgresMem finds the postmaster as the parent of the backend serving conn and sums
// the memory of it and every process it forked.
func ReadPostgresMem(ctx context.Context, conn *pgx.Conn) (PostgresMem, error) {
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return PostgresMem{}, fmt.Errorf("backend pid: %w", err)
	}
	st, err := procFields(fmt.Sprintf("/proc/%d/status", backend))
	if err != nil {
		return PostgresMem{}, fmt.Errorf("postgres backend %d: %w", backend, err)
	}
	postmaster := int(st["PPid"])
	pids := []int{postmaster}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return PostgresMem{}, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ps, err := procFields(fmt.Sprintf("/proc/%d/status", pid))
		if err == nil && int(ps["PPid"]) == postmaster {
			pids = append(pids, pid)
		}
	}
	var out PostgresMem
	for _, pid := range pids {
		m, err := ReadProcMem(pid)
		if err != nil {
			continue // exited meanwhile
		}
		out.Processes++
		out.RSS += m.RSS
		out.PSS += m.PSS
		out.CPU += procCPU(pid)
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), "127.0.0.1(") {
			out.Backends++
		}
	}
	return out, nil
}

// procCPU is utime + stime from /proc/<pid>/stat (clock ticks of 1/100 s on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	s := string(b)
	fs := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fs) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fs[11], 10, 64)
	st, _ := strconv.ParseInt(fs[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// ScrapeMetrics reads the unlabelled samples of a Prometheus text endpoint.
func ScrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.Fields(val)[0], 64); err == nil {
			out[name] = v
		}
	}
	return out, nil
}

// Snapshot is the memory of the shard and of PostgreSQL at one moment.
type Snapshot struct {
	Label         string
	ShardRSS      int64 // /proc/<pid>/status VmRSS
	ShardPSS      int64
	MetricsRSS    int64 // process_resident_memory_bytes from the shard's /metrics
	HeapInuse     int64 // go_memstats_heap_inuse_bytes
	Goroutines    int
	TenantsLoaded int           // atoll_homeserver_tenants_loaded
	ShardCPU      time.Duration // process_cpu_seconds_total
	PG            PostgresMem
	DBSize        int64  // pg_database_size of the shard's database
	Relations     int    // pg_class rows in tenant schemas (t_*)
	LoadAvg       string // /proc/loadavg: other work on the machine
	Time          time.Time
}

// TakeSnapshot reads everything a Snapshot holds.
// conn is any connection to the cluster, dbConn one to the shard's database dbName.
func TakeSnapshot(ctx context.Context, label string, s *Shard, conn, dbConn *pgx.Conn, dbName string) (Snapshot, error) {
	snap := Snapshot{Label: label, Time: time.Now()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fs := strings.Fields(string(b))
		snap.LoadAvg = strings.Join(fs[:min(3, len(fs))], " ")
	}
	pm, err := ReadProcMem(s.PID)
	if err != nil {
		return snap, fmt.Errorf("shard memory: %w", err)
	}
	snap.ShardRSS, snap.ShardPSS = pm.RSS, pm.PSS
	m, err := ScrapeMetrics(ctx, s.MetricsURL)
	if err != nil {
		return snap, fmt.Errorf("scrape shard metrics: %w", err)
	}
	snap.MetricsRSS = int64(m["process_resident_memory_bytes"])
	snap.HeapInuse = int64(m["go_memstats_heap_inuse_bytes"])
	snap.Goroutines = int(m["go_goroutines"])
	snap.TenantsLoaded = int(m["atoll_homeserver_tenants_loaded"])
	snap.ShardCPU = time.Duration(m["process_cpu_seconds_total"] * float64(time.Second))
	if snap.PG, err = ReadPostgresMem(ctx, conn); err != nil {
		return snap, err
	}
	if err := conn.QueryRow(ctx, "SELECT pg_database_size($1)", dbName).Scan(&snap.DBSize); err != nil {
		return snap, fmt.Errorf("database size: %w", err)
	}
	if err := dbConn.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname LIKE 't\_%'`).Scan(&snap.Relations); err != nil {
		return snap, fmt.Errorf("count relations: %w", err)
	}
	return snap, nil
}

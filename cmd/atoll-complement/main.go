// Command atoll-complement is the entrypoint of the Complement test image: it runs one Atoll
// homeserver with a single tenant named by $SERVER_NAME, the way Complement (the Matrix
// community's black-box homeserver test suite) expects a homeserver container to behave.
//
// On every start it:
//   - initialises a PostgreSQL data directory if there is none (a container committed by
//     Complement keeps its data and starts again without initdb), and starts postgres;
//   - writes the homeserver configuration and starts atoll-homeserver on loopback;
//   - creates the tenant through the admin API unless it exists (open registration with
//     m.login.dummy, shared-secret registration with the secret "complement");
//   - when the image carries them, starts MinIO and the atoll-media sidecar, which serves the
//     media endpoints as it does beside each shard;
//   - serves the Client-Server API on :8008 and TLS on :8448 with a certificate for
//     $SERVER_NAME signed by /complement/ca/ca.key, both forwarding to the homeserver with the
//     Host header set to $SERVER_NAME, since Complement addresses the container by
//     localhost:<mapped port>.
//
// SIGTERM and SIGINT stop the homeserver and then PostgreSQL (fast shutdown), so a container
// stopped before `docker commit` leaves a clean data directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var o options
	flag.StringVar(&o.dataDir, "data", "/var/lib/atoll-complement", "directory for the database and the generated configuration")
	flag.StringVar(&o.pgBin, "pg-bin", "/usr/lib/postgresql/15/bin", "directory holding initdb and postgres")
	flag.StringVar(&o.homeserver, "homeserver", "/usr/bin/atoll-homeserver", "atoll-homeserver binary")
	flag.StringVar(&o.caDir, "ca", "/complement/ca", "directory holding ca.crt and ca.key (a self-signed certificate is used when absent)")
	flag.StringVar(&o.clientAddr, "client", ":8008", "Client-Server API listener")
	flag.StringVar(&o.federationAddr, "federation", ":8448", "TLS listener")
	flag.StringVar(&o.sharedSecret, "shared-secret", "complement", "shared secret for admin registration")
	flag.StringVar(&o.media, "media", "/usr/bin/atoll-media", "atoll-media binary (media is served only when it and --minio exist)")
	flag.StringVar(&o.minio, "minio", "/usr/bin/minio", "MinIO binary, the media sidecar's S3")
	flag.StringVar(&o.logLevel, "log-level", envOr("ATOLL_COMPLEMENT_LOG_LEVEL", "info"), "homeserver log level")
	flag.Parse()
	o.serverName = os.Getenv("SERVER_NAME")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "atoll-complement")
	if o.serverName == "" {
		fmt.Fprintln(os.Stderr, "atoll-complement: SERVER_NAME is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, log, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "atoll-complement:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

const tenantUsage = `usage: atollctl tenant [--admin-url URL] [--admin-token-file FILE] SUBCOMMAND
  create --id ID --server-name NAME [--client-host HOST] [--registration open|token|shared_secret|closed] [--shared-secret S] [--max-users N]
  list
  show ID
  suspend ID
  resume ID
  delete ID           purge a suspended tenant: its schema and data are dropped
  settings ID --registration MODE [--shared-secret S] [--max-users N]
  token ID TOKEN [--uses N]   create a registration token
The admin URL and token default to $ATOLL_ADMIN_URL (http://127.0.0.1:8081) and $ATOLL_ADMIN_TOKEN.
`

// adminClient talks to a shard's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func (c *adminClient) call(ctx context.Context, method, path string, body any) (map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API: read response: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("admin API: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("admin API: %s: %v: %v", resp.Status, out["errcode"], out["error"])
	}
	return out, nil
}

func tenantCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("atollctl tenant", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, tenantUsage) }
	adminURL := fs.String("admin-url", envOr("ATOLL_ADMIN_URL", "http://127.0.0.1:8081"), "admin API base URL")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin token (default $ATOLL_ADMIN_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token := os.Getenv("ATOLL_ADMIN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("read admin token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return errors.New("no admin token: set ATOLL_ADMIN_TOKEN or --admin-token-file")
	}
	c := &adminClient{base: strings.TrimRight(*adminURL, "/"), token: token, http: &http.Client{Timeout: 2 * time.Minute}}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errors.New("missing subcommand")
	}
	sub, rest := rest[0], rest[1:]
	switch sub {
	case "create":
		return tenantCreate(ctx, c, rest)
	case "list":
		return tenantList(ctx, c)
	case "show", "suspend", "resume", "delete":
		if len(rest) != 1 {
			return fmt.Errorf("tenant %s takes one tenant ID", sub)
		}
		id := url.PathEscape(rest[0])
		var out map[string]any
		var err error
		switch sub {
		case "show":
			out, err = c.call(ctx, "GET", "/_atoll/admin/v1/tenants/"+id, nil)
		case "suspend", "resume":
			out, err = c.call(ctx, "POST", "/_atoll/admin/v1/tenants/"+id+"/"+sub, nil)
		case "delete":
			out, err = c.call(ctx, "DELETE", "/_atoll/admin/v1/tenants/"+id, nil)
		}
		if err != nil {
			return err
		}
		return printJSON(out)
	case "settings":
		if len(rest) < 1 {
			return errors.New("tenant settings takes a tenant ID")
		}
		settings, err := parseSettings("atollctl tenant settings", rest[1:])
		if err != nil {
			return err
		}
		out, err := c.call(ctx, "PUT", "/_atoll/admin/v1/tenants/"+url.PathEscape(rest[0])+"/settings", settings)
		if err != nil {
			return err
		}
		return printJSON(out)
	case "token":
		tfs := flag.NewFlagSet("atollctl tenant token", flag.ContinueOnError)
		uses := tfs.Int("uses", 0, "how many registrations the token allows (0: unlimited)")
		if len(rest) < 2 {
			return errors.New("tenant token takes a tenant ID and a token")
		}
		if err := tfs.Parse(rest[2:]); err != nil {
			return err
		}
		body := map[string]any{"token": rest[1]}
		if *uses > 0 {
			body["uses_allowed"] = *uses
		}
		out, err := c.call(ctx, "POST", "/_atoll/admin/v1/tenants/"+url.PathEscape(rest[0])+"/registration_tokens", body)
		if err != nil {
			return err
		}
		return printJSON(out)
	}
	fs.Usage()
	return fmt.Errorf("unknown subcommand %q", sub)
}

func parseSettings(name string, args []string) (map[string]any, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	registration := fs.String("registration", "closed", "open, token, shared_secret or closed")
	secret := fs.String("shared-secret", "", "shared secret for admin registration")
	maxUsers := fs.Int("max-users", 0, "user limit (0: none)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	s := map[string]any{"registration": *registration}
	if *secret != "" {
		s["shared_secret"] = *secret
	}
	if *maxUsers > 0 {
		s["max_users"] = *maxUsers
	}
	return s, nil
}

func tenantCreate(ctx context.Context, c *adminClient, args []string) error {
	fs := flag.NewFlagSet("atollctl tenant create", flag.ContinueOnError)
	id := fs.String("id", "", "tenant ID (lower-case letters, digits, _)")
	server := fs.String("server-name", "", "the tenant's Matrix server name")
	clientHost := fs.String("client-host", "", "optional extra host name for clients")
	registration := fs.String("registration", "closed", "open, token, shared_secret or closed")
	secret := fs.String("shared-secret", "", "shared secret for admin registration")
	maxUsers := fs.Int("max-users", 0, "user limit (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" || *server == "" {
		return errors.New("tenant create: --id and --server-name are required")
	}
	settings := map[string]any{"registration": *registration}
	if *secret != "" {
		settings["shared_secret"] = *secret
	}
	if *maxUsers > 0 {
		settings["max_users"] = *maxUsers
	}
	out, err := c.call(ctx, "POST", "/_atoll/admin/v1/tenants", map[string]any{"id": *id, "server_name": *server, "client_host": *clientHost, "settings": settings})
	if err != nil {
		return err
	}
	return printJSON(out)
}

func tenantList(ctx context.Context, c *adminClient) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSERVER NAME\tSTATUS\tREGISTRATION\tOWNER")
	after := ""
	for {
		out, err := c.call(ctx, "GET", "/_atoll/admin/v1/tenants?after="+url.QueryEscape(after), nil)
		if err != nil {
			return err
		}
		list, _ := out["tenants"].([]any)
		for _, item := range list {
			t, _ := item.(map[string]any)
			settings, _ := t["settings"].(map[string]any)
			fmt.Fprintf(w, "%v\t%v\t%v\t%v\t%v\n", t["id"], t["server_name"], t["status"], settings["registration"], t["owner_shard"])
		}
		next, _ := out["next"].(string)
		if next == "" {
			break
		}
		after = next
	}
	return w.Flush()
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

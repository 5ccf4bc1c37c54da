package main

import (
	"context"
	"os"

	"gvdb/db"
	"gvdb/plots/live"
)

func init() {
	register("serve", "serve a store over HTTP: a JSON API and a live page", (*Main).serve)
}

func (m *Main) serve(ctx context.Context, args []string) error {
	fs := m.newFlags("serve [flags]", live.Help, live.Examples)
	dir := fs.String("db", db.DefaultDir, "store directory")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (loopback; any other needs --token)")
	token := fs.String("token", os.Getenv("GVDB_TOKEN"), "token every request must carry (default $GVDB_TOKEN)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return live.Run(ctx, d, *addr, *token, m.Stderr)
}

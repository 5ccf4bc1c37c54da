package main

import (
	"context"
	"fmt"
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

// serveWhile serves the open store d on addr (gvdb train/import --serve)
// until the returned stop is called; "" serves nothing. The token is
// GVDB_TOKEN's.
func (m *Main) serveWhile(ctx context.Context, d *db.DB, addr string) (stop func(), err error) {
	token := os.Getenv("GVDB_TOKEN")
	if addr == "" {
		return func() {}, nil
	} else if err := live.CheckAddr(addr, token); err != nil {
		return nil, usageError{err}
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := live.Run(sctx, d, addr, token, m.Stderr); err != nil && sctx.Err() == nil {
			fmt.Fprintln(m.Stderr, "warning: serve:", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
